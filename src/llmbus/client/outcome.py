"""How a completion request ended, as the SDK gives it: its CompletionReceived, or a raised
CompletionError carrying its CompletionFailed."""

from pydantic import ValidationError

from llmbus.shared.contracts import CompletionFailed, CompletionReceived
from llmbus.shared.errors import LlmbusError


class CompletionError(LlmbusError):
    """The request ended in CompletionFailed."""

    def __init__(self, failed: CompletionFailed):
        super().__init__(f"{failed.error_type.value}: {failed.message}")
        self.failed = failed


def terminal_event(data: bytes) -> CompletionReceived:
    try:
        return CompletionReceived.model_validate_json(data)
    except ValidationError:
        raise CompletionError(CompletionFailed.model_validate_json(data)) from None
