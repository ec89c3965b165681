"""llmbus: an event-sourced LLM service over NATS."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmbus.client import Client, CompletionError

__all__ = ["Client", "CompletionError"]


def __getattr__(name: str) -> Any:
    # lazy, so `import llmbus` stays cheap for the CLI
    if name in __all__:
        from llmbus import client

        return getattr(client, name)
    raise AttributeError(name)
