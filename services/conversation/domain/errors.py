"""What goes wrong in conversations and managed prompts, each with the error type its reply carries.

The shared bases keep their builtin ones (InvalidRequestError is a ValueError, NotFoundError a
LookupError): the dead-letter code and the listings tell a message's own fault from the store's
by them.
"""

from llmbus.shared.errors import InvalidRequestError, NotFoundError, ReplyErrorType


class ConversationError(InvalidRequestError):
    """A conversation command with bad input; the message says what is wrong."""


class ConversationNotFound(NotFoundError):
    """Missing, deleted or someone else's: the same message, so ids cannot be probed.

    Takes the conversation id, or a whole message.
    """

    def __init__(self, conversation_id: object) -> None:
        text = str(conversation_id)
        super().__init__(text if " " in text else f"conversation {text} not found")


class PromptError(InvalidRequestError):
    """A prompt command that cannot be carried out; the message says why."""


class DuplicatePromptKey(PromptError):
    """The key is taken, by another managed prompt or by a domain prompt."""

    error_type = ReplyErrorType.duplicate_key


class PromptNotFound(NotFoundError):
    """No prompt has this key. Takes the key, or a whole message."""

    def __init__(self, key: str) -> None:
        super().__init__(key if " " in key else f"prompt {key!r} not found")


class PromptInactive(PromptError):
    """The prompt is deactivated: it cannot be rendered until activated again."""

    error_type = ReplyErrorType.prompt_inactive
