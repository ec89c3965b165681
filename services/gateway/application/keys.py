"""Who a request's API key speaks for: asked of the usage service (llmbus.keys.verify, with the
key's SHA-256 only) and cached for `gateway.key_cache_s`, so that a request with a known key
costs no round trip. A revocation (llmbus.keys.revoked) drops the key at once; an expiry is
checked on every use. Neither a key nor any part of it is ever logged or put in an error."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from llmbus.shared.contracts.keys import KeyInfo, key_hash
from llmbus.shared.errors import UnauthorizedError

# asks the usage service about one hash; UnauthorizedError for a key unknown, revoked or expired
Verify = Callable[[str], Awaitable[KeyInfo]]
# a header longer than this is no key of llmbus's: refused without hashing it
MAX_KEY_CHARS = 256
# bounds the caches: no stream of made-up keys can grow them without end
MAX_ENTRIES = 100_000
V = TypeVar("V")
MISSING = "no API key: send it as the header `Authorization: Bearer <key>`"
REFUSED = "invalid API key: unknown, revoked or expired"


def bearer(authorization: str | None) -> str:
    scheme, _, key = (authorization or "").strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise UnauthorizedError(MISSING)
    if len(key) > MAX_KEY_CHARS:
        raise UnauthorizedError(REFUSED)
    return key


def utcnow() -> datetime:
    return datetime.now(UTC)


class KeyCheck:
    """A verified key is trusted for `ttl_s` (and never past its expiry); a refused one is
    refused again for as long without asking; one revoked stays refused. Concurrent requests
    with a key not yet cached share one question."""

    def __init__(
        self,
        verify: Verify,
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._verify = verify
        self.ttl_s = ttl_s
        self._clock = clock
        self._now = now
        self._known: dict[str, tuple[KeyInfo, float]] = {}
        self._refused: dict[str, float] = {}
        self._revoked: set[str] = set()
        self._asking: dict[str, asyncio.Future[KeyInfo]] = {}

    async def identify(self, authorization: str | None) -> KeyInfo:
        """The key's KeyInfo, from the `Authorization` header; UnauthorizedError otherwise."""
        digest = key_hash(bearer(authorization))
        known = self._known.get(digest)
        if known is not None and known[1] > self._clock():
            return self._unexpired(digest, known[0])
        if digest in self._revoked or self._refused.get(digest, 0.0) > self._clock():
            raise UnauthorizedError(REFUSED)
        asking = self._asking.get(digest)
        if asking is None:
            asking = asyncio.ensure_future(self._ask(digest))
            self._asking[digest] = asking
            asking.add_done_callback(lambda _: self._asking.pop(digest, None))
        # shielded: one caller's cancellation (its connection closed) leaves the others' answer
        return self._unexpired(digest, await asyncio.shield(asking))

    async def _ask(self, digest: str) -> KeyInfo:
        try:
            info = await self._verify(digest)
        except UnauthorizedError:
            self._remember(self._refused, digest, self._clock() + self.ttl_s)
            raise UnauthorizedError(REFUSED) from None
        if digest in self._revoked:  # revoked while the question was on its way
            raise UnauthorizedError(REFUSED)
        self._remember(self._known, digest, (info, self._clock() + self.ttl_s))
        return info

    def _unexpired(self, digest: str, info: KeyInfo) -> KeyInfo:
        if info.expires_at is not None and info.expires_at <= self._now():
            self._known.pop(digest, None)
            raise UnauthorizedError(REFUSED)
        return info

    def forget(self, digest: str) -> None:
        """The key with this hash was revoked: refused from now on, in this process."""
        self._known.pop(digest, None)
        if len(self._revoked) >= MAX_ENTRIES:
            self._revoked.clear()  # a revoked key asked about again is refused by the service
        self._revoked.add(digest)

    @staticmethod
    def _remember(cache: dict[str, V], digest: str, value: V) -> None:
        if len(cache) >= MAX_ENTRIES:
            del cache[next(iter(cache))]  # the oldest
        cache[digest] = value
