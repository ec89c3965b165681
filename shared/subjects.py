"""NATS names: the public contract (SPEC.md) plus the streams and consumers llmbus provisions."""

COMPLETION_REQUESTED = "llmbus.completion.requested"
COMPLETION_RECEIVED = "llmbus.completion.received"
COMPLETION_FAILED = "llmbus.completion.failed"
COMPLETION_CHUNK = "llmbus.completion.chunk.{request_id}"
USAGE_RECORDED = "llmbus.usage.recorded"
USAGE_QUERY = "llmbus.usage.query"
BUDGET_THRESHOLD_REACHED = "llmbus.budget.threshold_reached"
BUDGET_EXCEEDED = "llmbus.budget.exceeded"
BUDGET_RESERVE = "llmbus.budget.reserve"
BUDGET_SET = "llmbus.budget.set"
BUDGET_SETTLE = "llmbus.budget.settle"
BUDGET_STATUS = "llmbus.budget.status"
DEAD_LETTER = "llmbus.deadletter.{service}"

REQUESTS_STREAM = "LLMBUS_REQUESTS"
EVENTS_STREAM = "LLMBUS_EVENTS"
DEAD_LETTER_STREAM = "LLMBUS_DEADLETTER"
ADVISORIES_STREAM = "LLMBUS_ADVISORIES"

COMPLETION_CONSUMER = "completion-workers"
MAX_DELIVERIES_ADVISORY = (
    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.LLMBUS_REQUESTS.completion-workers"
)
USAGE_CONSUMER = "usage-recorder"
GAVE_UP_CONSUMER = "completion-gave-up"

# JetStream keeps a stored message's reply subject to itself (it's the ack subject), so a caller
# who wants the terminal event back names its inbox in this header.
REPLY_TO_HEADER = "Llmbus-Reply-To"
MSG_ID_HEADER = "Nats-Msg-Id"
ERROR_TYPE_HEADER = "Llmbus-Error-Type"
ERROR_HEADER = "Llmbus-Error"
ORIGINAL_SUBJECT_HEADER = "Llmbus-Original-Subject"
