"""Which turns of a conversation a model is sent when the whole history would not fit."""

from collections.abc import Callable


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
