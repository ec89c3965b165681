"""Every gateway API key, in memory, saved as events. Callers run it on the store's thread.

The key itself exists only in issue()'s answer: what is kept, and looked up by verify(), is its
SHA-256. No message here names a key or any part of its secret.
"""

import contextlib
import secrets
from datetime import UTC, datetime
from typing import Any

from eventsourcing.utils import get_topic

from llmbus.services.usage.application.budget_book import Clock
from llmbus.services.usage.domain import ApiKey
from llmbus.shared.contracts.keys import KEY_PREFIX, KeyCreate, KeyInfo, KeyListQuery, key_hash
from llmbus.shared.errors import InvalidRequestError, NotFoundError, UnauthorizedError

# one message for an unknown, a revoked and an expired key: a guesser learns nothing from it
INVALID_KEY = "invalid API key"


class KeyRing:
    def __init__(self, app: Any, clock: Clock) -> None:
        self.app = app
        self.clock = clock
        self.by_id: dict[str, ApiKey] = {}
        self.by_hash: dict[str, ApiKey] = {}

    def load(self) -> None:
        issued = self.app.recorder.select_notifications(
            0, 1_000_000, topics=[get_topic(ApiKey.KeyIssued)], inclusive_of_start=False
        )
        for notification in issued:
            self._index(self.app.repository.get(notification.originator_id))

    def issue(self, create: KeyCreate, by: str | None) -> tuple[str, KeyInfo]:
        """A new key for create's user, team and project: the key (shown this once) and its info."""
        expires_at = as_utc(create.expires_at)
        if expires_at is not None and expires_at <= self.clock():
            raise InvalidRequestError(f"expires_at {expires_at.isoformat()} has already passed")
        key_id = self._new_id()
        key = f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(32)}"
        api_key = ApiKey(
            key_id=key_id, key_hash=key_hash(key), prefix=f"{KEY_PREFIX}{key_id}",
            user_id=create.user_id, team_id=create.team_id, project_id=create.project_id,
            name=create.name, admin=create.admin, expires_at=expires_at, created_by=by,
        )  # fmt: skip
        self.app.save(api_key)
        self._index(api_key)
        return key, info(api_key)

    def revoke(self, key_id: str, by: str | None) -> KeyInfo:
        """Revoke a key; one revoked already stays as it was."""
        api_key = self.by_id.get(key_id)
        if api_key is None:
            raise NotFoundError(f"no API key has the id {key_id!r}")
        if api_key.revoked_at is None:
            api_key.revoke(by=by, at=self.clock())
            try:
                self.app.save(api_key)
            except Exception:
                self._reload(key_id)  # its pending event is gone: read back what was saved
                raise
        return info(api_key)

    def list(self, query: KeyListQuery) -> list[KeyInfo]:
        keys = [
            k
            for k in self.by_id.values()
            if (query.user_id is None or k.user_id == query.user_id)
            and (query.include_revoked or k.revoked_at is None)
        ]
        return [info(k) for k in sorted(keys, key=lambda k: k.created_on)]

    def verify(self, key_hash: str, now: datetime) -> KeyInfo:
        api_key = self.by_hash.get(key_hash)
        if api_key is None or not api_key.usable(now):
            raise UnauthorizedError(INVALID_KEY)
        return info(api_key)

    def hash_of(self, key_id: str) -> str:
        return self.by_id[key_id].key_hash

    def _new_id(self) -> str:
        while True:  # 48 random bits: a clash is rare, and then another id is drawn
            key_id = secrets.token_hex(6)
            if key_id not in self.by_id:
                return key_id

    def _index(self, api_key: ApiKey) -> None:
        self.by_id[api_key.key_id] = api_key
        self.by_hash[api_key.key_hash] = api_key

    def _reload(self, key_id: str) -> None:
        # with the store out of reach, the key stays revoked here: failing closed
        with contextlib.suppress(Exception):
            self._index(self.app.repository.get(ApiKey.create_id(key_id)))


def as_utc(moment: datetime | None) -> datetime | None:
    """A time without a zone is taken as UTC: comparing it with the clock's would fail."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def info(api_key: ApiKey) -> KeyInfo:
    return KeyInfo(
        key_id=api_key.key_id, prefix=api_key.prefix, user_id=api_key.user_id,
        team_id=api_key.team_id, project_id=api_key.project_id, name=api_key.name,
        admin=api_key.admin, created_at=api_key.created_on, created_by=api_key.created_by,
        expires_at=api_key.expires_at, revoked_at=api_key.revoked_at,
    )  # fmt: skip
