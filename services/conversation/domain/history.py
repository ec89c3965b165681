"""A conversation's turns: which of them a model is sent when the whole history would not fit,
and which conversation each turn's request id belongs to (TurnClaim)."""

from collections.abc import Callable
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

# Stored events name their class by this topic, fixed: the module may move, the store stays.
CLAIM_TOPIC = "llmbus.services.conversation.turn:TurnClaim"
CLAIM_NAMESPACE = uuid5(NAMESPACE_URL, "llmbus:conversation:turn-claim")


class TurnClaim(Aggregate):
    """The conversation a chat turn's request id belongs to, saved in the same save as the turn.

    Its id is the request id's: a second conversation (of any user) taking the same request id
    fails to save a second claim, so a turn id is one turn's, whose outcome only its
    conversation hears. Turns stored before claims existed have none.
    """

    TOPIC = CLAIM_TOPIC

    class TurnClaimed(Aggregate.Created):
        TOPIC = f"{CLAIM_TOPIC}.TurnClaimed"
        request_id: str
        conversation_id: str

    class Created(Aggregate.Created):
        """Never stored: with explicit topics, eventsourcing wants Aggregate's Created declared."""

        TOPIC = f"{CLAIM_TOPIC}.Created"

    @staticmethod
    def create_id(request_id: str) -> UUID:
        return uuid5(CLAIM_NAMESPACE, request_id)

    @event(TurnClaimed)
    def __init__(self, request_id: str, conversation_id: str) -> None:
        self.request_id = request_id
        self.conversation_id = conversation_id


def trim_history(
    messages: list[dict[str, str]],
    count_tokens: Callable[[list[dict[str, str]]], int],
    limit: int,
) -> tuple[list[dict[str, str]], int]:
    """Drops the oldest turns until the history fits `limit` tokens.

    System messages and the last message always stay, even if they alone do not fit. A trimmed
    history never opens on an assistant turn: some providers refuse one. Only the oldest turns
    other than system messages go, so the history kept is `without_oldest(messages, dropped)`.
    """
    kept = list(messages)
    dropped = 0
    while count_tokens(kept) > limit:
        oldest = _oldest_droppable(kept)
        if oldest is None:
            break
        del kept[oldest]
        dropped += 1
    if dropped:
        oldest = _oldest_droppable(kept)
        while oldest is not None and kept[oldest]["role"] == "assistant":
            del kept[oldest]
            dropped += 1
            oldest = _oldest_droppable(kept)
    return kept, dropped


def without_oldest(messages: list[dict[str, str]], dropped: int) -> list[dict[str, str]]:
    """`messages` less the `dropped` oldest turns other than system messages.

    `trim_history` only ever drops the oldest such turn, so what it keeps is exactly
    `without_oldest(messages, dropped)` with the `dropped` it returns: that number is all a
    stored turn needs to say how its history was trimmed.
    """
    kept: list[dict[str, str]] = []
    for message in messages:
        if dropped > 0 and message["role"] != "system":
            dropped -= 1
        else:
            kept.append(message)
    return kept


def _oldest_droppable(messages: list[dict[str, str]]) -> int | None:
    last = len(messages) - 1
    return next(
        (i for i, m in enumerate(messages) if i < last and m["role"] != "system"),
        None,
    )
