"""`llmbus clients create|list|revoke` and `--creds`, as an operator and a client use them,
against the test's nats-server with authentication on."""

import asyncio
import os
from pathlib import Path

import nats
import pytest

from llmbus.services.usage.service import serve as serve_usage
from llmbus.shared import bus, subjects
from llmbus.shared.bus import answers
from llmbus.shared.errors import ForbiddenError
from llmbus.shared.settings import Settings
from support import connected, llmbus_cli, running, wait_for

pytestmark = [
    pytest.mark.refusals,
    pytest.mark.skipif(
        bool(os.environ.get("NATS_URL")), reason="needs the embedded server's authentication"
    ),
]


async def cli(*args: str) -> tuple[int, str]:
    done = await asyncio.to_thread(llmbus_cli, *args)
    return done.returncode, done.stdout + done.stderr


def owner_only(path: Path) -> bool:
    return path.is_file() and path.stat().st_mode & 0o777 == 0o600


def copy(source: Path, target: Path) -> Path:
    """The client's copy of its credentials, which revoking cannot delete."""
    target.write_bytes(source.read_bytes())
    return target


async def test_an_operator_issues_lists_and_revokes_credentials(settings: Settings) -> None:
    async with running(serve_usage, settings), connected(settings) as nc:
        await wait_for(lambda: answers(nc, subjects.BUDGET_STATUS), 30, "the usage service")
        code, out = await cli("clients", "create", "carol", "--user", "carol", "--team", "red")
        assert code == 0, out
        creds = Path(out.strip().splitlines()[-1])
        assert await asyncio.to_thread(owner_only, creds)

        code, out = await cli("--creds", str(creds), "budgets", "status")
        assert code == 0, out  # a client may read the budgets it falls under
        code, out = await cli(
            "--creds", str(creds), "budgets", "set", "cap", "--limit", "1", "--window", "daily"
        )
        assert code == 1 and "admin" in out

        code, out = await cli("clients", "create", "carol", "--user", "someone")
        assert code == 1 and "exists" in out
        code, out = await cli("clients", "create", "../evil", "--user", "x")
        assert code == 1 and not (settings.state_dir / "auth" / "evil.nk").exists()

        kept = await asyncio.to_thread(copy, creds, creds.with_name("kept-by-carol.nk"))
        assert settings.nats_url
        connected_carol = await nats.connect(
            settings.nats_url, allow_reconnect=False, **bus.credential_options(kept)
        )
        code, out = await cli("clients", "revoke", "carol")
        assert code == 0, out
        await wait_for(lambda: connected_carol.is_closed, 10, "carol's connection to be cut")
        code, out = await cli("clients", "list")
        assert "carol" in out and code == 0
        with pytest.raises(ForbiddenError, match="refused the credentials"):
            await bus.connect(settings, "revoked", creds=kept)
