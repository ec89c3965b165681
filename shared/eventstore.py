"""The one event-store factory: SQLite files under the state folder, or PostgreSQL."""

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast
from uuid import UUID

from eventsourcing import sqlite
from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError, PersistenceError, ProcessRecorder
from eventsourcing.utils import Environment

from llmbus.shared.errors import StoreBusyError
from llmbus.shared.settings import Settings

AppT = TypeVar("AppT", bound=Application[Any])
T = TypeVar("T")
# a version conflict means another process saved the same aggregate first; this many tries
# outlast any realistic burst of writers to one aggregate
CONFLICT_ATTEMPTS = 5


def store_env(settings: Settings, store: str) -> dict[str, str]:
    if settings.event_store == "postgres":
        pg = settings.postgres
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_HOST": pg.host,
            "POSTGRES_PORT": str(pg.port),
            "POSTGRES_USER": pg.user,
            "POSTGRES_PASSWORD": pg.password,
            "POSTGRES_DBNAME": pg.dbname,
            "POSTGRES_SCHEMA": pg.schema_name,
            "POSTGRES_POOL_SIZE": "8",
            "POSTGRES_MAX_OVERFLOW": "8",
            "CREATE_TABLE": "y",
        }
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return {
        "PERSISTENCE_MODULE": f"{__name__}:SQLiteFactory",
        "SQLITE_SYNCHRONOUS": settings.sqlite_synchronous.upper(),
        "SQLITE_DBNAME": str(settings.state_dir / f"{store}.sqlite"),
        # several worker processes may share one SQLite store; wait on its lock, don't fail.
        "SQLITE_LOCK_TIMEOUT": "30",
        "CREATE_TABLE": "y",
    }


class SQLiteConnectionPool(sqlite.SQLiteConnectionPool):
    synchronous = "NORMAL"

    def _create_connection(self) -> sqlite.SQLiteConnection:
        connection = super()._create_connection()
        connection._sqlite_conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return connection


class SQLiteFactory(sqlite.SQLiteFactory):
    """eventsourcing's SQLite store with a chosen `synchronous` level.

    In WAL mode NORMAL keeps every commit through a crash of the process (what the guarantees
    are about) and skips the fsync per commit, which costs ~3.5 ms a request on a typical disk.
    FULL also survives power loss.
    """

    def __init__(self, env: Environment) -> None:
        super().__init__(env)
        self.datastore.pool.__class__ = SQLiteConnectionPool  # connections open lazily: none yet
        pool = cast(SQLiteConnectionPool, self.datastore.pool)
        pool.synchronous = self.env.get("SQLITE_SYNCHRONOUS", "NORMAL")


class SQLiteProbe:
    """Tells whether an aggregate has events, on the calling thread.

    It has a read-only connection of its own: in WAL mode a reader never waits for the writer,
    so the event loop can ask directly instead of hopping to a thread (~1 ms at low load).
    """

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def has_events(self, aggregate_id: UUID) -> bool:
        # eventsourcing's SQLite recorder keeps UUIDs as hex text
        row = self._db.execute(
            "SELECT 1 FROM stored_events WHERE originator_id = ? LIMIT 1", (aggregate_id.hex,)
        ).fetchone()
        return row is not None

    def close(self) -> None:
        self._db.close()


def sqlite_probe(settings: Settings, store: str) -> SQLiteProbe | None:
    if settings.event_store != "sqlite":
        return None
    return SQLiteProbe(settings.state_dir / f"{store}.sqlite")


def open_store(app_class: type[AppT], settings: Settings, store: str, attempts: int = 5) -> AppT:
    env = store_env(settings, store)
    for attempt in range(1, attempts + 1):
        try:
            return app_class(env=env)
        except PersistenceError:
            # processes starting together race to create the same PostgreSQL tables and types
            # (a duplicate type, "tuple concurrently updated"); the loser finds them made on
            # its next try
            if attempt == attempts:
                raise
            time.sleep(0.1 * attempt)
    raise AssertionError("unreachable")


class OutboxApplication(Application[Any]):
    """An application whose recorder also keeps tracking records, for its outbox relay."""

    def construct_recorder(self) -> ProcessRecorder:
        return self.factory.process_recorder()

    @property
    def process_recorder(self) -> ProcessRecorder:
        assert isinstance(self.recorder, ProcessRecorder)
        return self.recorder


def retry_on_conflict(
    attempt: Callable[[], T],
    what: str,
    on_conflict: Callable[[], None] | None = None,
    attempts: int = CONFLICT_ATTEMPTS,
) -> T:
    """Run `attempt` (read -> change -> save) again each time its save loses a race with another
    process. `attempt` must read its aggregates afresh on every call: a failed save has consumed
    their pending events. `on_conflict` forgets what the losing attempt changed in memory."""
    for _ in range(attempts):
        try:
            return attempt()
        except IntegrityError:
            if on_conflict is not None:
                on_conflict()
    raise StoreBusyError(f"could not {what}: the store kept changing under it; try again")
