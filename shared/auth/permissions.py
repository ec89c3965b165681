"""Who may publish and subscribe on what: the one table the NATS configuration is built from,
and that docs/security.md shows.

The operator (`auth/operator.nk`) is llmbus's administrator and may do anything in llmbus's
account. Each service may publish only the events it owns and the requests it makes, and
subscribe only to what it serves or consumes. Clients live in accounts of their own (see
config.py): they can reach only CLIENT_SUBJECTS, and only their own inbox hears replies.
"""

from dataclasses import dataclass

from llmbus.shared import subjects as s


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    deny_publish: tuple[str, ...] = ()


# every service provisions streams, consumes from JetStream and answers requests
_COMMON_PUBLISH = ("$JS.API.>", "$JS.ACK.>", "_INBOX.>", "_R_.>", s.CLIENT_REPLY_PREFIX + ".>")
_COMMON_SUBSCRIBE = ("_INBOX.>",)
# what no service may do to JetStream: delete or purge what others keep, or edit the clients
_NEVER = (
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.CONSUMER.DELETE.>",
    f"$KV.{s.CLIENTS_BUCKET}.>",
)
_MSG_DELETE = "$JS.API.STREAM.MSG.DELETE."
# a completion worker deletes a request JetStream gave up redelivering (given_up.py), from the
# requests stream only; nothing else deletes a stored message
COMPLETION_DENIED = (
    *_NEVER,
    *(
        _MSG_DELETE + stream
        for stream in (
            s.EVENTS_STREAM, s.DEAD_LETTER_STREAM, s.ADVISORIES_STREAM, f"KV_{s.CLIENTS_BUCKET}"
        )
    ),
)  # fmt: skip
DENIED = (*_NEVER, _MSG_DELETE + ">")


def _client_side(*names: str) -> tuple[str, ...]:
    """A request subject and the subject it arrives on from clients' accounts."""
    return tuple(x for name in names for x in (name, s.from_client(name)))


# what the gateway's web console asks (services/gateway/console), through the SDK, as an admin
CONSOLE_ASKS = (
    s.COMPLETION_ESTIMATE,
    s.USAGE_ROWS,
    s.BUDGET_STATUS,
    s.CONVERSATION_CREATE,
    s.CONVERSATION_GET,
    s.CONVERSATION_LIST,
    s.CONVERSATION_SEND,
    s.PROMPT_CREATE,
    s.PROMPT_UPDATE,
    s.PROMPT_GET,
    s.PROMPT_LIST,
    s.PROMPT_HISTORY,
    s.PROMPT_LABEL,
    s.PROMPT_ROLLBACK,
    s.PROMPT_ACTIVATE,
    s.PROMPT_DEACTIVATE,
)


SERVICE_PERMISSIONS: dict[str, Permissions] = {
    "completion": Permissions(
        publish=(
            s.COMPLETION_RECEIVED,
            s.COMPLETION_FAILED,
            s.CLIENT_CHUNKS,
            s.CLIENT_CHUNK_PREFIX + ".>",
            "llmbus.completion.control.*",
            s.USAGE_RECORDED,
            s.BUDGET_RESERVE,
            s.BUDGET_SETTLE,
            s.BUDGET_GRANT,
            s.BUDGET_GRANT_RETURN,
            s.BUDGET_HOLDERS,
            s.BUDGET_REMAINING,  # an estimate shows what is left in each budget
            s.PROMPT_RESOLVE,
            s.PRICES_SYNC,
            s.CONVERSATION_TURN_CONFLICT,
            s.DEAD_LETTER.format(service="completion"),
            *_COMMON_PUBLISH,
        ),
        subscribe=(
            s.BUDGET_CHANGED,
            s.PRICES_CHANGED,
            s.PROMPT_EVENTS_ALL,
            *_client_side(s.COMPLETION_ESTIMATE, s.COMPLETION_STATUS, s.COMPLETION_CANCEL),
            "llmbus.completion.control.*",
            *_COMMON_SUBSCRIBE,
        ),
        deny_publish=COMPLETION_DENIED,
    ),
    "usage": Permissions(
        publish=(
            s.BUDGET_THRESHOLD_REACHED,
            s.BUDGET_EXCEEDED,
            s.BUDGET_CHANGED,
            s.PRICES_CHANGED,
            s.KEYS_REVOKED,
            s.USAGE_QUERY,  # its health check asks it (docker-compose.yml)
            s.DEAD_LETTER.format(service="usage"),
            *_COMMON_PUBLISH,
        ),
        subscribe=(
            s.BUDGET_RESERVE,
            s.BUDGET_SETTLE,
            s.BUDGET_GRANT,
            s.BUDGET_GRANT_RETURN,
            s.BUDGET_HOLDERS,
            s.PRICES_SYNC,
            s.KEYS_VERIFY,  # the gateway's, in llmbus's own account: never a client's
            *_client_side(
                s.USAGE_QUERY,
                s.USAGE_ROWS,
                s.BUDGET_SET,
                s.BUDGET_STATUS,
                s.BUDGET_REMAINING,
                s.USAGE_REPRICE,
                s.PRICES_SET,
                s.PRICES_LIST,
                s.KEYS_CREATE,
                s.KEYS_LIST,
                s.KEYS_REVOKE,
            ),
            *_COMMON_SUBSCRIBE,
        ),
        deny_publish=DENIED,
    ),
    "conversation": Permissions(
        publish=(
            s.COMPLETION_REQUESTED,  # a chat turn is a completion request
            s.PROMPT_EVENTS_ALL,
            s.PROMPT_LIST,  # its health check asks it (docker-compose.yml)
            s.DEAD_LETTER.format(service="conversation"),
            *_COMMON_PUBLISH,
        ),
        subscribe=(
            "llmbus.conversation.*",
            s.from_client("llmbus.conversation.*"),
            "llmbus.prompt.*",
            s.from_client("llmbus.prompt.*"),
            *_COMMON_SUBSCRIBE,
        ),
        deny_publish=DENIED,
    ),
    # the HTTP edge: the SDK's calls on its one connection, key checks, readiness probes
    "gateway": Permissions(
        publish=(
            s.COMPLETION_REQUESTED,
            s.COMPLETION_STATUS,  # and its readiness probe of the completion service
            s.COMPLETION_CANCEL,
            s.KEYS_VERIFY,
            s.USAGE_QUERY,  # its readiness probe of the usage service
            *CONSOLE_ASKS,
            "_INBOX.>",
        ),
        subscribe=(s.CLIENT_CHUNKS, s.KEYS_REVOKED, *s.ADMIN_EVENT_SUBJECTS, *_COMMON_SUBSCRIBE),
        deny_publish=DENIED,
    ),
}
SERVICES = tuple(SERVICE_PERMISSIONS)


def client_permissions(admin: bool) -> Permissions:
    """A client's, inside its own account: the public requests, its own inbox, and the chunks
    of its own streamed requests."""
    hears = ("_INBOX.>", s.CLIENT_CHUNKS, *(s.ADMIN_EVENT_SUBJECTS if admin else ()))
    return Permissions(publish=s.CLIENT_SUBJECTS, subscribe=hears)
