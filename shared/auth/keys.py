"""NATS nkeys: a user's seed (its secret, written 0600) and public key."""

import os
from pathlib import Path

import nkeys

from llmbus.shared.errors import ConfigError


def new_seed() -> bytes:
    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))


def public_key(seed: bytes) -> str:
    return str(nkeys.from_seed(bytearray(seed)).public_key.decode())


def write_seed(path: Path, seed: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(seed + b"\n")


def read_public_key(path: Path) -> str:
    try:
        return public_key(path.read_bytes().strip())
    except OSError as exc:
        raise ConfigError(f"cannot read NATS credentials {path}: {exc.strerror}") from None
    except Exception:
        raise ConfigError(f"{path} holds no NATS user seed (an nkey starting 'SU')") from None


def ensure_seed(path: Path) -> str:
    """The public key of the seed at `path`, made on first use."""
    if not path.exists():
        write_seed(path, new_seed())
    return read_public_key(path)
