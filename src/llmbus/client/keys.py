"""client.keys: gateway API keys, kept by the usage service (llmbus.keys.*)."""

from datetime import datetime

from llmbus.client._transport import SubClient
from llmbus.shared import subjects
from llmbus.shared.contracts.keys import (
    KeyCreate,
    KeyCreated,
    KeyInfo,
    KeyList,
    KeyListQuery,
    KeyRevoke,
    KeyVerified,
    KeyVerify,
    key_hash,
)


class Keys(SubClient):
    service = "usage"

    async def create(
        self,
        user_id: str,
        *,
        team_id: str | None = None,
        project_id: str | None = None,
        name: str | None = None,
        admin: bool = False,
        expires_at: datetime | None = None,
        timeout_s: float = 10.0,
    ) -> KeyCreated:
        """A new key whose requests are booked to this user, team and project (admin). The key
        is in the reply only: keep it, nothing can show it again. A time without a zone is UTC."""
        request = KeyCreate(
            user_id=user_id, team_id=team_id, project_id=project_id, name=name, admin=admin,
            expires_at=expires_at,
        )  # fmt: skip
        return await self._call(subjects.KEYS_CREATE, request, KeyCreated, timeout_s)

    async def list(
        self, user_id: str | None = None, include_revoked: bool = False, timeout_s: float = 10.0
    ) -> list[KeyInfo]:
        """The keys issued, oldest first (admin); a user's only with `user_id`."""
        query = KeyListQuery(user_id=user_id, include_revoked=include_revoked)
        return (await self._call(subjects.KEYS_LIST, query, KeyList, timeout_s)).keys

    async def revoke(self, key_id: str, timeout_s: float = 10.0) -> KeyInfo:
        """Stop a key from working, at once (admin); a revoked key stays revoked."""
        request = KeyRevoke(key_id=key_id)
        return await self._call(subjects.KEYS_REVOKE, request, KeyInfo, timeout_s)

    async def verify(self, key: str, timeout_s: float = 10.0) -> KeyInfo:
        """Whom `key` speaks for; RequestError `unauthorized` if it is unknown, revoked or
        expired. Only its SHA-256 is sent, on a subject llmbus's own account alone may ask."""
        request = KeyVerify(key_hash=key_hash(key))
        return (await self._call(subjects.KEYS_VERIFY, request, KeyVerified, timeout_s)).info
