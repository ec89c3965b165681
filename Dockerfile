# The llmbus services image. docker-compose.yml runs it as `llmbus serve completion`,
# `llmbus serve usage` and `llmbus serve conversation`; any other llmbus command works too
# (`docker compose run usage usage`).
FROM python:3.11-slim

# libpq: the PostgreSQL event store uses psycopg 3, which loads the system's libpq.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 \
    && rm -rf /var/lib/apt/lists/*

RUN pip install --no-cache-dir uv==0.13.9

ENV PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Dependencies first, from the lock file alone: this layer is rebuilt only when uv.lock changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

# Then llmbus itself, as a regular wheel install. (pyproject's [tool.uv] config-settings ask
# setuptools for a strict editable install; that only matters for editable installs.)
COPY README.md ./
COPY src ./src
COPY shared ./shared
COPY services ./services
RUN uv sync --frozen --no-dev --no-editable \
    && rm -rf build ./*.egg-info

# litellm must not fetch its price map from the internet at import: use the bundled copy.
ENV LITELLM_LOCAL_MODEL_COST_MAP=True \
    PATH=/app/.venv/bin:$PATH \
    LLMBUS_STATE_DIR=/var/lib/llmbus

# Run as an unprivileged user whose home is the state folder (the usage service's DuckDB file).
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/llmbus --create-home llmbus
USER llmbus
WORKDIR /var/lib/llmbus

ENTRYPOINT ["llmbus"]
CMD ["--help"]
