"""The gateway's Prometheus metrics, beside the common ones of shared/metrics.py (errors by
type and requests in flight, labelled `service="gateway"`), on the process's one registry,
which /metrics exposes whole."""

from prometheus_client import Counter, Histogram

from llmbus.shared.metrics import ERRORS, IN_FLIGHT, Family

# seconds: a cached model list takes a millisecond, a long completion minutes
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

HTTP_REQUESTS = Family(
    Counter(
        "llmbus_gateway_http_requests_total",
        "HTTP requests answered by the gateway, by route and status (499: the caller closed "
        "the connection first).",
        ["route", "status"],
    )
)
HTTP_LATENCY = Family(
    Histogram(
        "llmbus_gateway_http_request_duration_seconds",
        "From a request's arrival to its last byte (a stream's whole length), by route.",
        ["route"],
        buckets=LATENCY_BUCKETS,
    )
)
CANCELLED = Counter(
    "llmbus_gateway_cancelled_total",
    "Requests cancelled because their HTTP connection closed or their time ran out.",
)
GATEWAY_IN_FLIGHT = IN_FLIGHT("gateway")


def count_error(code: str) -> None:
    """An answer with an error, by its code (llmbus's error type)."""
    ERRORS("gateway", code).inc()
