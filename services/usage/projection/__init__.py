"""The DuckDB usage projection (store.py): its tables and rollup (schema.py, rollup.py), and the
SQL that answers usage queries from them (query.py, zones.py)."""

from llmbus.services.usage.projection.store import (
    STATE_NAME,
    ProjectionLockedError,
    Stored,
    UsageProjection,
    rebuild,
)

__all__ = ["STATE_NAME", "ProjectionLockedError", "Stored", "UsageProjection", "rebuild"]
