from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# request ids become a NATS subject token (llmbus.completion.chunk.<request_id>), so no dots.
RequestId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-:]+$")
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Contract(BaseModel):
    """Base of every wire message: unknown fields are ignored so producers may add fields."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Identity(Contract):
    """Who a request is for; carried through to every event it causes."""

    user_id: str | None = None
    team_id: str | None = None
    project_id: str | None = None
    conversation_id: str | None = None


class ErrorReply(Contract):
    """The reply to a request/reply subject when the request could not be served."""

    error_type: str
    message: str
    occurred_at: datetime = Field(default_factory=utcnow)
