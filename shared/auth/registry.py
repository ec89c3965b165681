"""The clients llmbus has issued credentials to, kept beside the credentials (the server's
configuration is built from it) and published to the `llmbus_clients` key-value bucket, where
services look a client up by name."""

import json
import os
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from llmbus.shared.contracts.clients import ClientIdentity
from llmbus.shared.errors import ConfigError

_CLIENTS = TypeAdapter(list[ClientIdentity])


def load_clients(path: Path) -> list[ClientIdentity]:
    if not path.is_file():
        return []
    try:
        return _CLIENTS.validate_json(path.read_bytes())
    except ValidationError as exc:
        raise ConfigError(f"{path} is not a valid client registry: {exc}") from None


def save_clients(path: Path, clients: list[ClientIdentity]) -> None:
    """Whole or not at all: a crash mid-write leaves the previous registry."""
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(_CLIENTS.dump_json(clients, indent=2))
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def encode(identity: ClientIdentity) -> bytes:
    return identity.model_dump_json().encode()


def decode(data: bytes) -> ClientIdentity:
    return ClientIdentity.model_validate(json.loads(data))
