"""The conversation service's commands and queries on its event store, and what they answer.

- `conversations`: the store's commands (start, send, rename, delete, record outcomes, prompts)
- `turns`: a chat turn's completion request, fitted, checked, stored and rebuilt
- `views`: conversations and prompts as replies show them
- `listings`: each user's conversations and every prompt, followed from the notification log
"""

from llmbus.services.conversation.application.conversations import ConversationApplication
from llmbus.services.conversation.application.listings import Listings
from llmbus.services.conversation.application.turns import (
    Fit,
    Fitter,
    Messages,
    NewConversation,
    Outcome,
)
from llmbus.services.conversation.application.views import (
    DOMAIN_AUTHOR,
    check_domain_selector,
    conversation_summary,
    conversation_view,
    prompt_view,
    turn_view,
)

__all__ = [
    "DOMAIN_AUTHOR",
    "ConversationApplication",
    "Fit",
    "Fitter",
    "Listings",
    "Messages",
    "NewConversation",
    "Outcome",
    "check_domain_selector",
    "conversation_summary",
    "conversation_view",
    "prompt_view",
    "turn_view",
]
