"""How large a request may be, so that every message made from it fits the NATS server.

The server refuses a message larger than its `max_payload` (headers included) and closes the
connection that sent it. Sizes are measured as llmbus encodes: JSON with non-ASCII escaped, so
one emoji takes 12 bytes (`\\ud83d\\ude00`), not the 4 it takes in UTF-8.
"""

import json
from dataclasses import dataclass
from typing import Any

# Headers a request gets on its way (Nats-Msg-Id, Llmbus-Reply-To) and a dead letter adds
# (error type, reason up to 1000 bytes, original subject, Nats-Msg-Id).
HEADER_ROOM = 4096
# What an event holds besides the fields it copies from its request: its own fields and a
# failure's message (bounded by llmbus), with room to spare.
EVENT_ROOM = 16_384


def encoded_size(value: Any) -> int:
    """Bytes of `value` as llmbus publishes it (ASCII-only JSON, so characters are bytes)."""
    return len(json.dumps(value, separators=(",", ":")))


@dataclass(frozen=True)
class Limits:
    """The limits of one server: completion.max_request_bytes within its max_payload."""

    max_request_bytes: int
    max_payload: int

    @property
    def request_bytes(self) -> int:
        """The largest request accepted: one that, with headers, still fits the server."""
        return max(min(self.max_request_bytes, self.max_payload - HEADER_ROOM), 0)

    @property
    def carried_bytes(self) -> int:
        """The most that a request's copied fields may take in each event made from it; a
        quarter of a server's max_payload when that is too small to leave EVENT_ROOM (what
        still does not fit is parked by the outbox relay, not lost)."""
        return max(self.max_payload - EVENT_ROOM, self.max_payload // 4)

    def request_limit_text(self) -> str:
        if self.request_bytes == self.max_request_bytes:
            return f"the limit is {self.request_bytes} (completion.max_request_bytes)"
        return (
            f"the limit is {self.request_bytes}: the NATS server's max_payload of "
            f"{self.max_payload} bytes, less {HEADER_ROOM} for headers"
        )


def header_text(text: str, limit: int = 1000) -> str:
    """`text` as a header value: one line of ASCII, at most `limit` bytes."""
    line = " ".join(text.split()).encode("ascii", "backslashreplace")
    return line[:limit].decode("ascii")


def header_bytes(headers: dict[str, str]) -> int:
    """What headers add to a message, as NATS counts it against max_payload."""
    lines = sum(len(key) + 2 + len(value.encode()) + 2 for key, value in headers.items())
    return len(b"NATS/1.0\r\n") + lines + 2
