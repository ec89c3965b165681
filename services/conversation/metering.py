"""The conversation service's metrics (shared/metrics.py): its consumer's backlog. Its
requests in flight and its error replies are counted by its RpcRouter (shared/rpc/metering.py)."""

from llmbus.shared import metrics, subjects
from llmbus.shared.settings import Settings

SERVICE = "conversation"


def conversation_metrics(settings: Settings) -> metrics.MetricsExporter:
    metered = settings.conversation
    return metrics.MetricsExporter(
        SERVICE, metered.metrics_port, metered.metrics_host,
        [(subjects.EVENTS_STREAM, subjects.CONVERSATION_CONSUMER)],
    )  # fmt: skip
