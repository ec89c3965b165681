"""A client's identity: what `llmbus clients create` issues and every service books by."""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, StringConstraints

# a client's name is a NATS subject token and part of an account name
ClientName = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9_-]*$")
]
IdValue = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class ClientIdentity(BaseModel):
    """Who a client's credentials speak for. Requests sent with them are booked to this user,
    team and project; `admin` may act for anyone, change budgets and any prompt."""

    name: ClientName
    public_key: str
    user_id: IdValue
    team_id: IdValue | None = None
    project_id: IdValue | None = None
    admin: bool = False
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None
