"""The clients' identities as services see them: the `llmbus_clients` key-value bucket, which
the operator writes (`llmbus clients create|revoke`, `llmbus up`) and services only read."""

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, KeyNotFoundError
from nats.js.kv import KeyValue

from llmbus.shared import subjects
from llmbus.shared.auth.registry import decode, encode
from llmbus.shared.contracts.clients import ClientIdentity
from llmbus.shared.errors import ForbiddenError


async def provision_bucket(js: JetStreamContext, replicas: int) -> None:
    config = KeyValueConfig(
        bucket=subjects.CLIENTS_BUCKET, history=1, storage=StorageType.FILE, replicas=replicas
    )
    try:
        await js.create_key_value(config)
    except BadRequestError:
        pass  # there already; its contents are the operator's


async def publish_clients(js: JetStreamContext, clients: list[ClientIdentity]) -> None:
    bucket = await js.key_value(subjects.CLIENTS_BUCKET)
    for client in clients:
        await bucket.put(client.name, encode(client))


class ClientDirectory:
    """Looks clients up by name, once each: a name is never reissued, and a revoked client's
    account is gone from the server, so nothing it sends arrives after its revocation."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._bucket: KeyValue | None = None
        self._known: dict[str, ClientIdentity] = {}

    async def identity(self, name: str) -> ClientIdentity:
        known = self._known.get(name)
        if known is not None:
            return known
        if self._bucket is None:
            self._bucket = await self._js.key_value(subjects.CLIENTS_BUCKET)
        try:
            entry = await self._bucket.get(name)
        except KeyNotFoundError:
            raise ForbiddenError(f"client {name!r} is not registered") from None
        assert entry.value is not None
        identity = decode(entry.value)
        if not identity.active:
            raise ForbiddenError(f"client {name!r} was revoked")
        self._known[name] = identity
        return identity
