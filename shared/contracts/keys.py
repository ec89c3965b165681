"""Gateway API keys (llmbus.keys.*): issued and revoked by an admin, verified by the gateway.

A key is shown once, when it is issued. The usage service stores only its SHA-256 (a key is 32
random bytes: a slow hash would add nothing) as KeyIssued and KeyRevoked events. The gateway
asks llmbus.keys.verify with the hash of the key a request brings; the key's identity, not the
request, decides the user, team and project a call is booked to.
"""

import hashlib
from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from llmbus.shared.contracts.base import Contract
from llmbus.shared.contracts.clients import IdValue

KeyId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9]+$")]
KeyHash = Annotated[str, StringConstraints(min_length=64, max_length=64, pattern=r"^[0-9a-f]+$")]
KeyName = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
# a key reads sk-llmbus-<key_id>-<secret>: what is before the secret names the key, unsecret
KEY_PREFIX = "sk-llmbus-"


def key_hash(key: str) -> str:
    """What the usage service stores and llmbus.keys.verify is asked with, for a whole key."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyCreate(Contract):
    """The request on llmbus.keys.create (admin): a new key for this user, team and project."""

    user_id: IdValue
    team_id: IdValue | None = None
    project_id: IdValue | None = None
    name: KeyName | None = Field(default=None, description="What the key is for, to list it by.")
    admin: bool = Field(default=False, description="May open the web console.")
    expires_at: datetime | None = None


class KeyInfo(Contract):
    """A key as listed: never the key itself."""

    key_id: KeyId
    prefix: str = Field(description="The key's first characters, to recognise it by.")
    user_id: str
    team_id: str | None = None
    project_id: str | None = None
    name: str | None = None
    admin: bool = False
    created_at: datetime
    created_by: str | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class KeyCreated(Contract):
    """The reply to llmbus.keys.create: the key, shown this once, and how it is listed."""

    key: str
    info: KeyInfo


class KeyListQuery(Contract):
    """The request on llmbus.keys.list (admin)."""

    user_id: IdValue | None = None
    include_revoked: bool = False


class KeyList(Contract):
    keys: list[KeyInfo]


class KeyRevoke(Contract):
    """The request on llmbus.keys.revoke (admin)."""

    key_id: KeyId


class KeyVerify(Contract):
    """The request on llmbus.keys.verify (the gateway only): the SHA-256 of a presented key."""

    key_hash: KeyHash


class KeyVerified(Contract):
    """The reply to llmbus.keys.verify. An unknown, revoked or expired key is an
    `unauthorized` ErrorReply instead, which never says which of the three it was."""

    info: KeyInfo


class KeyRevoked(Contract):
    """Broadcast on llmbus.keys.revoked when a key is revoked: gateways forget it at once."""

    key_id: KeyId
    key_hash: KeyHash
