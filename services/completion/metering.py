"""What the worker tells Prometheus (shared/metrics.py): each request it ends, and each provider
call it pays for. On the request's path: a cached child and an add, no await."""

from llmbus.services.completion.answer import ModelReply
from llmbus.shared import metrics, subjects
from llmbus.shared.metrics import MODELS
from llmbus.shared.routing.router import Router
from llmbus.shared.sections import CompletionSettings

SERVICE = "completion"


def paid(model: str, reply: ModelReply) -> None:
    """A provider call that was paid for: its tokens and cost (a call that lost a race to
    another worker's was paid too, and counts)."""
    label = MODELS.label(model)
    usage = reply.usage
    metrics.TOKENS(label, "prompt").inc(usage.prompt_tokens)
    metrics.TOKENS(label, "completion").inc(usage.completion_tokens)
    metrics.TOKENS(label, "cached").inc(usage.cached_tokens)
    metrics.COST(label).inc(reply.cost_usd)


def answered(model: str, reply: ModelReply) -> None:
    """A call that answered: its latency, and its time to first token if it streamed."""
    label = MODELS.label(model)
    metrics.LATENCY(label).observe(reply.latency_ms / 1000)
    if reply.ttft_ms is not None:
        metrics.TIME_TO_FIRST_TOKEN(label).observe(reply.ttft_ms / 1000)


def ended(model: str | None, error_type: str | None = None) -> None:
    """A request this worker ended: received, or failed with `error_type`."""
    status = "received" if error_type is None else "failed"
    metrics.REQUESTS(SERVICE, MODELS.label(model), status).inc()
    if error_type is not None:
        metrics.ERRORS(SERVICE, error_type).inc()


def completion_metrics(config: CompletionSettings, router: Router) -> metrics.MetricsExporter:
    """The worker's exporter. A model label is a name of the catalog or of a role's chain,
    never whatever a request says."""
    routed = (model for chain in router.chains.values() for model in chain)
    MODELS.allow([*router.catalog.known_models(), *routed])
    return metrics.MetricsExporter(
        SERVICE, config.metrics_port, config.metrics_host,
        [(subjects.REQUESTS_STREAM, subjects.COMPLETION_CONSUMER)],
    )  # fmt: skip
