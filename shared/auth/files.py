"""Where llmbus keeps its NATS credentials and the server configuration built from them:
`<state_dir>/auth/`, readable by its owner only."""

from dataclasses import dataclass
from pathlib import Path

SEED_SUFFIX = ".nk"


@dataclass(frozen=True)
class AuthFiles:
    root: Path

    @classmethod
    def of(cls, state_dir: Path) -> "AuthFiles":
        return cls(state_dir / "auth")

    @property
    def operator(self) -> Path:
        """llmbus's administrator: the CLI's and `llmbus up`'s own credentials."""
        return self.root / f"operator{SEED_SUFFIX}"

    @property
    def system(self) -> Path:
        """The NATS system account's user: reloads the server configuration."""
        return self.root / f"system{SEED_SUFFIX}"

    def service(self, name: str) -> Path:
        return self.root / "services" / f"{name}{SEED_SUFFIX}"

    def client(self, name: str) -> Path:
        return self.root / "clients" / f"{name}{SEED_SUFFIX}"

    @property
    def registry(self) -> Path:
        """Every client ever issued (revoked ones too: a name is never given out twice)."""
        return self.root / "clients.json"

    @property
    def server_config(self) -> Path:
        return self.root / "nats-server.conf"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"
