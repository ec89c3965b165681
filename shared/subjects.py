"""NATS names: the public contract (SPEC.md) plus the streams and consumers llmbus provisions."""

import re

COMPLETION_REQUESTED = "llmbus.completion.requested"
COMPLETION_RECEIVED = "llmbus.completion.received"
COMPLETION_FAILED = "llmbus.completion.failed"
COMPLETION_CHUNK = "llmbus.completion.chunk.{request_id}"
COMPLETION_ESTIMATE = "llmbus.completion.estimate"
COMPLETION_STATUS = "llmbus.completion.status"
COMPLETION_CANCEL = "llmbus.completion.cancel"
# each completion worker answers for the requests it holds (status, cancel) on its own subject:
# a request's call claim names its holder (see worker_subject)
COMPLETION_CONTROL = "llmbus.completion.control.{worker}"
USAGE_RECORDED = "llmbus.usage.recorded"
USAGE_QUERY = "llmbus.usage.query"
# the usage rows themselves, a page at a time, for exports
USAGE_ROWS = "llmbus.usage.rows"
# what usage would cost at other prices; applied, it records UsageRepriced events (admin)
USAGE_REPRICE = "llmbus.usage.reprice"
# the price book: set by hand (admin), listed, and synced from a worker's catalog at its start
PRICES_SET = "llmbus.prices.set"
PRICES_LIST = "llmbus.prices.list"
PRICES_SYNC = "llmbus.prices.sync"
# a model's price was set: workers ask for the current prices again
PRICES_CHANGED = "llmbus.prices.changed"
# gateway keys (shared/contracts/keys.py): admin requests, the gateway's check, and a broadcast
KEYS_CREATE = "llmbus.keys.create"
KEYS_LIST = "llmbus.keys.list"
KEYS_REVOKE = "llmbus.keys.revoke"
KEYS_VERIFY = "llmbus.keys.verify"  # the gateway only: never a client subject
KEYS_REVOKED = "llmbus.keys.revoked"
BUDGET_THRESHOLD_REACHED = "llmbus.budget.threshold_reached"
BUDGET_EXCEEDED = "llmbus.budget.exceeded"
BUDGET_RESERVE = "llmbus.budget.reserve"
BUDGET_SET = "llmbus.budget.set"
BUDGET_SETTLE = "llmbus.budget.settle"
BUDGET_STATUS = "llmbus.budget.status"
# what is left in each budget matching a request's attributes, for routing
BUDGET_REMAINING = "llmbus.budget.remaining"
# grants: budget a worker holds and admits requests against locally (see BudgetGrantRequest)
BUDGET_GRANT = "llmbus.budget.grant"
BUDGET_GRANT_RETURN = "llmbus.budget.grant.return"
# every worker drops its grants on this and acknowledges, before a budget change is answered
BUDGET_CHANGED = "llmbus.budget.changed"
# workers holding grants say so here, so that every usage service knows whom to wait for
BUDGET_HOLDERS = "llmbus.budget.holders"
DEAD_LETTER = "llmbus.deadletter.{service}"
CONVERSATION_CREATE = "llmbus.conversation.create"
CONVERSATION_GET = "llmbus.conversation.get"
CONVERSATION_LIST = "llmbus.conversation.list"
CONVERSATION_RENAME = "llmbus.conversation.rename"
CONVERSATION_DELETE = "llmbus.conversation.delete"
CONVERSATION_SEND = "llmbus.conversation.send"
# a chat turn's request refused as another's request_id: only its conversation service hears it
CONVERSATION_TURN_CONFLICT = "llmbus.conversation.turn_conflict"
PROMPT_CREATE = "llmbus.prompt.create"
PROMPT_UPDATE = "llmbus.prompt.update"
PROMPT_GET = "llmbus.prompt.get"
PROMPT_LIST = "llmbus.prompt.list"
PROMPT_HISTORY = "llmbus.prompt.history"
PROMPT_LABEL = "llmbus.prompt.label"
PROMPT_ROLLBACK = "llmbus.prompt.rollback"
PROMPT_ACTIVATE = "llmbus.prompt.activate"
PROMPT_DEACTIVATE = "llmbus.prompt.deactivate"
PROMPT_RENDER = "llmbus.prompt.render"
PROMPT_PREVIEW = "llmbus.prompt.preview"
PROMPT_RESOLVE = "llmbus.prompt.resolve"
# PromptChanged, one subject per prompt key; completion workers drop cached prompts on these
PROMPT_EVENTS = "llmbus.prompt.events.{key}"
PROMPT_EVENTS_ALL = "llmbus.prompt.events.>"

# What a client (credentials from `llmbus clients create`) may publish. Each client has a NATS
# account of its own, which forwards these subjects to llmbus's account under CLIENT_PREFIX and
# its name (llmbus.in.alice.budget.set): the subject a service hears says who sent it.
CLIENT_SUBJECTS = (
    COMPLETION_REQUESTED,
    COMPLETION_ESTIMATE,
    COMPLETION_STATUS,
    COMPLETION_CANCEL,
    USAGE_QUERY,
    USAGE_ROWS,
    USAGE_REPRICE,
    PRICES_SET,
    PRICES_LIST,
    KEYS_CREATE,
    KEYS_LIST,
    KEYS_REVOKE,
    BUDGET_SET,
    BUDGET_STATUS,
    BUDGET_REMAINING,
    CONVERSATION_CREATE,
    CONVERSATION_GET,
    CONVERSATION_LIST,
    CONVERSATION_RENAME,
    CONVERSATION_DELETE,
    CONVERSATION_SEND,
    PROMPT_CREATE,
    PROMPT_UPDATE,
    PROMPT_GET,
    PROMPT_LIST,
    PROMPT_HISTORY,
    PROMPT_LABEL,
    PROMPT_ROLLBACK,
    PROMPT_ACTIVATE,
    PROMPT_DEACTIVATE,
    PROMPT_RENDER,
    PROMPT_PREVIEW,
)
# the budget events an admin client hears live (the operator reads every stream)
ADMIN_EVENT_SUBJECTS = (BUDGET_THRESHOLD_REACHED, BUDGET_EXCEEDED)
CLIENT_PREFIX = "llmbus.in"
# a client's replies: llmbus.reply.<client>.<inbox less _INBOX.> reaches its _INBOX.<...>
CLIENT_REPLY_PREFIX = "llmbus.reply"
CLIENT_INBOX_PREFIX = "_INBOX."
# a client's chunks: llmbus.chunk.<client>.<request_id> reaches its llmbus.completion.chunk.<id>
CLIENT_CHUNK_PREFIX = "llmbus.chunk"
CLIENT_CHUNKS = "llmbus.completion.chunk.>"
CLIENTS_BUCKET = "llmbus_clients"

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
CONVERSATION_CONSUMER = "conversation-recorder"
CONVERSATION_QUEUE = "conversation"
COMPLETION_QUEUE = "completion"

# JetStream keeps a stored message's reply subject to itself (it's the ack subject), so a caller
# who wants the terminal event back names its inbox in this header.
REPLY_TO_HEADER = "Llmbus-Reply-To"
MSG_ID_HEADER = "Nats-Msg-Id"
ERROR_TYPE_HEADER = "Llmbus-Error-Type"
ERROR_HEADER = "Llmbus-Error"
ORIGINAL_SUBJECT_HEADER = "Llmbus-Original-Subject"

# a subject a message can be published to: dot-separated tokens, none empty, of printable ASCII
# ('!' to '~') less the wildcards '*' and '>' (and '.', the separator)
SUBJECT_TOKEN = r"[!-)+-\-/-=?-~]+"
PUBLISH_SUBJECT = re.compile(rf"{SUBJECT_TOKEN}(?:\.{SUBJECT_TOKEN})*")
MAX_SUBJECT_CHARS = 512


def is_publish_subject(subject: str) -> bool:
    return len(subject) <= MAX_SUBJECT_CHARS and PUBLISH_SUBJECT.fullmatch(subject) is not None


def is_reply_subject(subject: str) -> bool:
    """Where a worker may send a caller its outcome: an inbox, never a system subject
    ($JS.API.STREAM.DELETE.…, $SYS.…), where the reply would be a command run with the worker's
    rights, nor one of llmbus's own subjects, where it would be a forged message."""
    return (
        is_publish_subject(subject)
        and not subject.startswith("$")
        and subject.split(".", 1)[0] != "llmbus"
    )


def from_client(subject: str) -> str:
    """`subject` as it arrives from a client's account: llmbus.x.y -> llmbus.in.*.x.y."""
    return f"{CLIENT_PREFIX}.*.{subject.removeprefix('llmbus.')}"


def client_of(subject: str) -> str | None:
    """The client whose account sent a message on `subject`; None: llmbus's own account (a
    service, or the operator)."""
    if not subject.startswith(CLIENT_PREFIX + "."):
        return None
    return subject.split(".", 3)[2]


def public_subject(subject: str) -> str:
    """llmbus.in.alice.budget.set -> llmbus.budget.set; any other subject as it is."""
    client = client_of(subject)
    if client is None:
        return subject
    return "llmbus." + subject.split(".", 3)[3]


def client_reply_subject(client: str, reply_to: str) -> str | None:
    """Where llmbus sends `client` the outcome it asked for at `reply_to`: only an inbox in
    the client's own account can be reached (None for any other subject)."""
    if not reply_to.startswith(CLIENT_INBOX_PREFIX) or not is_publish_subject(reply_to):
        return None
    return f"{CLIENT_REPLY_PREFIX}.{client}.{reply_to.removeprefix(CLIENT_INBOX_PREFIX)}"


def chunk_subject(request_id: str, client: str | None) -> str:
    """Where a request's chunks go: llmbus.completion.chunk.<request_id>, in the account of the
    client that sent it (only that client hears them) or in llmbus's own."""
    if client is None:
        return COMPLETION_CHUNK.format(request_id=request_id)
    return f"{CLIENT_CHUNK_PREFIX}.{client}.{request_id}"


def worker_subject(holder: str) -> str:
    """A worker's control subject, from its claim holder's name (a host name may hold dots)."""
    return COMPLETION_CONTROL.format(worker=re.sub(r"[^A-Za-z0-9_-]", "_", holder))
