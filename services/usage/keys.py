"""The usage service's gateway keys on NATS: llmbus.keys.create, .list and .revoke (admin), and
llmbus.keys.verify (the gateway). A revocation is broadcast on llmbus.keys.revoked, so that a
gateway caching keys forgets it at once. Keys are logged by their id only."""

import logging
from typing import TYPE_CHECKING

from llmbus.shared import subjects
from llmbus.shared.contracts.keys import (
    KeyCreate,
    KeyCreated,
    KeyInfo,
    KeyList,
    KeyListQuery,
    KeyRevoke,
    KeyRevoked,
    KeyVerified,
    KeyVerify,
)
from llmbus.shared.identity import caller, owner, require_admin
from llmbus.shared.rpc import RpcRouter

if TYPE_CHECKING:
    from llmbus.services.usage.service import UsageService

log = logging.getLogger("llmbus.usage.keys")


class KeyHandlers:
    def __init__(self, service: "UsageService") -> None:
        self.service = service

    async def create(self, request: KeyCreate) -> KeyCreated:
        """A new gateway key for a user, team and project (admin): the key is in this reply
        only; the usage service keeps its SHA-256."""
        require_admin(caller(), "creating an API key")
        by = owner(caller()) or "operator"
        key, info = await self.service.on_store(self.service.keys.issue, request, by)
        log.info("API key %s issued to user %s by %s", info.key_id, info.user_id, by)
        return KeyCreated(key=key, info=info)

    async def list(self, query: KeyListQuery) -> KeyList:
        """The keys issued (admin), oldest first; never a key itself."""
        require_admin(caller(), "listing API keys")
        # on the store's thread, which adds keys: the list is read between two changes
        return KeyList(keys=await self.service.on_store(self.service.keys.list, query))

    async def revoke(self, request: KeyRevoke) -> KeyInfo:
        """Revoke a key (admin); revoking it again changes nothing, and is broadcast again."""
        require_admin(caller(), "revoking an API key")
        keys, by = self.service.keys, owner(caller()) or "operator"
        info = await self.service.on_store(keys.revoke, request.key_id, by)
        log.info("API key %s revoked by %s", info.key_id, by)
        revoked = KeyRevoked(key_id=info.key_id, key_hash=keys.hash_of(info.key_id))
        await self.service.nc.publish(subjects.KEYS_REVOKED, revoked.model_dump_json().encode())
        return info

    async def verify(self, request: KeyVerify) -> KeyVerified:
        """Whom the key with this SHA-256 speaks for; unauthorized if unknown, revoked or
        expired, without saying which."""
        keys = self.service.keys
        return KeyVerified(info=keys.verify(request.key_hash, keys.clock()))


def key_routes(router: RpcRouter, handlers: KeyHandlers) -> None:
    router.answer(subjects.KEYS_CREATE, handlers.create)
    router.answer(subjects.KEYS_LIST, handlers.list)
    router.answer(subjects.KEYS_REVOKE, handlers.revoke)
    router.answer(subjects.KEYS_VERIFY, handlers.verify)
