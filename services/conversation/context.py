"""Fits a chat history into a model's context window, on the shared model catalog."""

from decimal import Decimal

from llmbus.services.conversation.application import Fit, Messages
from llmbus.services.conversation.domain.errors import ConversationError, PromptError
from llmbus.services.conversation.domain.history import trim_history
from llmbus.shared.catalog import ModelCatalog, UnknownModelError

TOKEN_CACHE_SIZE = 50_000


class ContextFitter:
    """Fits a chat history into a model's context window, less the reply's share of it.

    Tokens are counted offline, as the completion worker counts them for budgets. Trimming
    counts each message alone (a little more than together), so what is kept always fits.
    """

    def __init__(self, catalog: ModelCatalog) -> None:
        self.catalog = catalog
        self._tokens: dict[tuple[str, str, str], int] = {}

    def __call__(self, model: str, messages: Messages, max_tokens: int | None) -> Fit:
        try:
            window = self.catalog.context_window(model)
            if window is None:
                return Fit(messages)
            limit = max(window - self.catalog.reply_cap(model, max_tokens), 1)
            if self.catalog.count_tokens(model, messages) <= limit:
                return Fit(messages)
        except UnknownModelError as unknown:
            raise ConversationError(unknown.message) from None
        counts = {id(m): self._count(model, m) for m in messages}
        kept, dropped = trim_history(messages, lambda ms: sum(counts[id(m)] for m in ms), limit)
        return Fit(kept, dropped, window)

    def _count(self, model: str, message: dict[str, str]) -> int:
        key = (model, message["role"], message["content"])
        tokens = self._tokens.get(key)
        if tokens is None:
            tokens = self.catalog.count_tokens(model, [message])
            if len(self._tokens) >= TOKEN_CACHE_SIZE:
                self._tokens.clear()
            self._tokens[key] = tokens
        return tokens

    def preview(
        self, model: str, messages: Messages, max_tokens: int | None
    ) -> tuple[int, int, Decimal, Decimal]:
        """Prompt tokens, the reply cap, the input cost and the worst-case cost at list price."""
        try:
            prompt_tokens = self.catalog.count_tokens(model, messages)
            cap = self.catalog.reply_cap(model, max_tokens)
            worst = self.catalog.worst_case_cost(model, messages, max_tokens)
            price = self.catalog.list_price(model)
        except UnknownModelError as unknown:
            raise PromptError(unknown.message) from None
        return prompt_tokens, cap, prompt_tokens * price.input_per_token, worst
