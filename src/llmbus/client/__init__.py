"""The async Python SDK: `async with Client() as client:` then client.complete(), client.chat(),
and the sub-clients client.prompts, client.budgets, client.conversations and client.usage."""

from llmbus.client._transport import dumpable, new_request_id
from llmbus.client.budgets import Budgets
from llmbus.client.conversations import Conversations
from llmbus.client.core import Client, CompletionError, retry_id, terminal_event
from llmbus.client.prompts import Prompts
from llmbus.client.usage import Usage

__all__ = [
    "Budgets",
    "Client",
    "CompletionError",
    "Conversations",
    "Prompts",
    "Usage",
    "dumpable",
    "new_request_id",
    "retry_id",
    "terminal_event",
]
