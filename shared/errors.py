"""One error hierarchy. Every message is meant for the person who reads it."""


class LlmbusError(Exception):
    """Base of every error llmbus raises on purpose."""


class ConfigError(LlmbusError):
    """The configuration file or environment is invalid."""


class NotReachableError(LlmbusError):
    """A server llmbus needs (NATS, PostgreSQL) cannot be reached."""


class TooLargeError(LlmbusError):
    """A message larger than llmbus accepts, or than the NATS server carries; says which."""


class StoreBusyError(LlmbusError):
    """Other processes kept saving the same aggregate first; the command may be tried again."""


class RequestError(LlmbusError):
    """A request/reply call came back with an error reply."""

    def __init__(self, error_type: str, message: str):
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
