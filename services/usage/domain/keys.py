"""Gateway API keys, as events. A key is issued once and may be revoked; its events hold the
key's SHA-256, never the key, so the store cannot give a key away (shared/contracts/keys.py)."""

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

KEYS_NAMESPACE = uuid5(NAMESPACE_URL, "llmbus:keys")


class ApiKey(Aggregate):
    """One gateway key: whom its requests are booked to, until when, and whether it was revoked."""

    class KeyIssued(Aggregate.Created):
        key_id: str
        key_hash: str  # sha256 hex of the whole key
        prefix: str  # the key's first characters, which carry no part of its secret
        user_id: str
        team_id: str | None
        project_id: str | None
        name: str | None
        admin: bool
        expires_at: datetime | None
        created_by: str | None

    class KeyRevoked(Aggregate.Event):
        by: str | None
        at: datetime

    @staticmethod
    def create_id(key_id: str) -> UUID:
        return uuid5(KEYS_NAMESPACE, key_id)

    @event(KeyIssued)
    def __init__(
        self, key_id: str, key_hash: str, prefix: str, user_id: str, team_id: str | None,
        project_id: str | None, name: str | None, admin: bool, expires_at: datetime | None,
        created_by: str | None,
    ) -> None:  # fmt: skip
        self.key_id = key_id
        self.key_hash = key_hash
        self.prefix = prefix
        self.user_id = user_id
        self.team_id = team_id
        self.project_id = project_id
        self.name = name
        self.admin = admin
        self.expires_at = expires_at
        self.created_by = created_by
        self.revoked_at: datetime | None = None
        self.revoked_by: str | None = None

    @event(KeyRevoked)
    def revoke(self, by: str | None, at: datetime) -> None:
        self.revoked_at = at
        self.revoked_by = by

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)
