"""One error hierarchy. Every message is meant for the person who reads it.

Each error carries the `error_type` its ErrorReply gets when it ends a request/reply call
(`llmbus.shared.rpc` maps it: one place for every service). Domain errors derive from these
classes; this module is plain Python, so domain code may import it.
"""

from enum import StrEnum


class ReplyErrorType(StrEnum):
    """The error_type of an ErrorReply (what completion failures are to `ErrorType`)."""

    invalid_request = "invalid_request"
    too_large = "too_large"
    not_found = "not_found"
    duplicate_key = "duplicate_key"
    prompt_inactive = "prompt_inactive"
    invalid_variables = "invalid_variables"
    store_busy = "store_busy"
    unavailable = "unavailable"
    forbidden = "forbidden"
    unauthorized = "unauthorized"
    request_conflict = "request_conflict"
    internal = "internal"


class LlmbusError(Exception):
    """Base of every error llmbus raises on purpose. One that is not about the request itself
    (a server down, a bug) answers `internal`, and its text stays in the service's log."""

    error_type: str = ReplyErrorType.internal


class InvalidRequestError(LlmbusError, ValueError):
    """The request cannot be carried out as asked; the message says what is wrong with it."""

    error_type = ReplyErrorType.invalid_request


class NotFoundError(LlmbusError, LookupError):
    """What the request names does not exist (or is not the caller's to see)."""

    error_type = ReplyErrorType.not_found


class ForbiddenError(LlmbusError, PermissionError):
    """The caller's credentials do not allow this: another user's name in the payload, a budget
    change without admin rights, another team's prompt."""

    error_type = ReplyErrorType.forbidden


class UnauthorizedError(LlmbusError, PermissionError):
    """No credentials, or ones that are unknown, revoked or expired (a gateway key): the message
    never says which, so a guesser learns nothing."""

    error_type = ReplyErrorType.unauthorized


class RequestConflictError(LlmbusError):
    """A request_id (or chat turn id) that another client's request already owns."""

    error_type = ReplyErrorType.request_conflict


class ConfigError(LlmbusError):
    """The configuration file or environment is invalid."""


class NotReachableError(LlmbusError):
    """A server llmbus needs (NATS, PostgreSQL) cannot be reached."""


class TooLargeError(LlmbusError):
    """A message larger than llmbus accepts, or than the NATS server carries; says which."""

    error_type = ReplyErrorType.too_large


class StoreBusyError(LlmbusError):
    """Other processes kept saving the same aggregate first; the command may be tried again."""

    error_type = ReplyErrorType.store_busy


class UnavailableError(LlmbusError, RuntimeError):
    """The service cannot answer this now (it is stopping, say); ask again, or another replica."""

    error_type = ReplyErrorType.unavailable


class RequestError(LlmbusError):
    """A request/reply call came back with an error reply (raised by the SDK)."""

    def __init__(self, error_type: str, message: str):
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
