"""Synthetic usage for bench/analytics.py: a year of provider calls with realistic shapes.

Deterministic for a seed, an end time and a row count: batch k is built from a random generator
of its own, so any batch can be rebuilt alone. The world (models, teams, users, projects) comes
from the seed alone.

- 10 models over 5 providers, with their list prices per token (one local model is free);
- 2000 users in 40 teams of Zipf-like sizes; users' activity is Zipf-like too (a few users make
  most calls); each team has 1-5 projects and uses 2-4 models; each project calls from 1-4
  sites (features), each with its own role (or none), managed prompt (or none, half of them;
  its version moves on through the year), model and fallback model (3 % of its calls);
- about 2 % of calls fail, with a provider error type, no cost and no completion tokens;
- a third of the calls are streamed and have a ttft_ms; latency_ms is log-normal per model;
- tags, conversations and workflows on some calls;
- occurred_at spans `DAYS` days up to `end`, in increasing order (as a live system ingests
  them), denser in working hours, on weekdays, and later in the year (usage grows).
"""

import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import accumulate
from typing import Any

from llmbus.shared.contracts import UsageRecorded

DAYS = 365
HOURS = DAYS * 24
BATCH = 5000  # the usage service's batch size (services/usage/service.py, catch_up)

# provider, model, $ per input token, $ per output token, median latency ms, popularity
MODELS = [
    ("openai", "gpt-4o", 2.5e-6, 10e-6, 1400.0, 14),
    ("openai", "gpt-4o-mini", 0.15e-6, 0.6e-6, 600.0, 30),
    ("openai", "o3-mini", 1.1e-6, 4.4e-6, 4200.0, 5),
    ("anthropic", "claude-3-5-sonnet", 3e-6, 15e-6, 1800.0, 12),
    ("anthropic", "claude-3-5-haiku", 0.8e-6, 4e-6, 700.0, 10),
    ("gemini", "gemini-1.5-pro", 1.25e-6, 5e-6, 1500.0, 5),
    ("gemini", "gemini-1.5-flash", 0.075e-6, 0.3e-6, 450.0, 9),
    ("mistral", "mistral-large", 2e-6, 6e-6, 1300.0, 4),
    ("mistral", "mistral-small", 0.2e-6, 0.6e-6, 500.0, 5),
    ("ollama", "llama-3.1-8b", 0.0, 0.0, 900.0, 6),
]
ROLES = ["chat", "summarize", "extract", "classify", "agent", "translate"]
# error types of failed provider calls (shared/contracts/completion.py ErrorType), by frequency
ERRORS = [("rate_limited", 40), ("provider_error", 22), ("timeout", 20),
          ("context_window_exceeded", 10), ("content_filtered", 6), ("authentication", 2)]  # fmt: skip
TAG_SETS = [((), 12), (("prod",), 45), (("staging",), 15), (("prod", "batch"), 10),
            (("eval",), 6), (("prod", "experiment-a"), 6), (("prod", "experiment-b"), 4),
            (("dev", "notebook"), 2)]  # fmt: skip
N_USERS = 2000
N_TEAMS = 40
ERROR_RATE = 0.02
FALLBACK_RATE = 0.03  # calls served by a site's fallback model
STREAMED = 0.33
USER_ZIPF = 1.1
TEAM_ZIPF = 0.8


@dataclass(frozen=True)
class Site:
    """One place in an application that calls llmbus: a feature with its own configuration."""

    role: str | None  # the routing role it names, or None: it names a model
    prompt: str | None  # the managed prompt it renders, or None
    versions: int  # how many versions that prompt goes through in the year
    model: int  # index into MODELS
    fallback: int  # the model its calls go to when the first is down (its role's fallback)


@dataclass(frozen=True)
class Project:
    team: str
    name: str
    sites: tuple[Site, ...]
    site_cum: tuple[float, ...]  # how much each site is used, cumulated


@dataclass(frozen=True)
class User:
    name: str
    team: str
    projects: tuple[Project, ...]  # the first is the user's own; others are used now and then


class World:
    """Who calls which model for what: built from the seed alone."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        team_weights = [1 / (t + 1) ** TEAM_ZIPF for t in range(N_TEAMS)]
        teams = [f"team-{t:02d}" for t in range(N_TEAMS)]
        popularity = [m[5] for m in MODELS]
        projects: dict[str, list[Project]] = {}
        for t, team in enumerate(teams):
            mix: list[int] = []  # the 2-4 models the team has chosen
            while len(mix) < 2 + t % 3:
                m = rng.choices(range(len(MODELS)), popularity)[0]
                if m not in mix:
                    mix.append(m)
            projects[team] = []
            for p in range(rng.randint(1, 5)):
                name = f"{team}-proj-{p}"
                sites = tuple(
                    Site(
                        rng.choice([*ROLES, None]),
                        f"{name}-prompt-{k}" if rng.random() < 0.5 else None,
                        rng.randint(1, 12),
                        rng.choice(mix),
                        rng.choice(mix),
                    )
                    for k in range(rng.randint(1, 4))
                )
                weights = accumulate(rng.paretovariate(1.2) for _ in sites)
                projects[team].append(Project(team, name, sites, tuple(weights)))
        self.users: list[User] = []
        for u in range(N_USERS):
            team = rng.choices(teams, team_weights)[0]
            own = projects[team]
            first = rng.randrange(len(own))
            ordered = (own[first], *own[:first], *own[first + 1 :])
            self.users.append(User(f"user-{u:04d}", team, ordered))
        rng.shuffle(self.users)  # activity rank is not user number
        self.user_cum = list(accumulate(1 / (r + 1) ** USER_ZIPF for r in range(N_USERS)))
        # the calls' intensity per hour of the year: growth, working hours, weekdays
        self.hour_cum = list(accumulate(intensity(h) for h in range(HOURS)))
        self.error_cum = list(accumulate(w for _, w in ERRORS))
        self.tag_cum = list(accumulate(w for _, w in TAG_SETS))


def intensity(hour: int) -> float:
    day, of_day = divmod(hour, 24)
    growth = 0.5 + day / DAYS  # 0.5 at the start of the year, 1.5 at its end
    working = 0.25 + math.exp(-(((of_day - 14) / 4.5) ** 2))  # peaks at 14:00 UTC
    weekday = 0.35 if day % 7 in (5, 6) else 1.0
    return growth * working * weekday


class Synthetic:
    """UsageRecorded events: `total` of them, the last in the hour before `end`."""

    def __init__(self, seed: int, total: int, end: datetime) -> None:
        self.seed = seed
        self.total = total
        self.world = World(seed)
        self.start = end - timedelta(hours=HOURS)

    def batch(self, index: int, size: int = BATCH) -> list[tuple[int, UsageRecorded]]:
        """Batch `index` (positions index * size + 1 ...), as the projection applies them."""
        rng = random.Random(self.seed * 1_000_003 + index)
        first = index * size
        last = min(first + size, self.total)
        return [(i + 1, self.event(rng, self.moment(rng, i), f"{i:012d}")) for i in range(first, last)]  # fmt: skip

    def moment(self, rng: random.Random, i: int) -> datetime:
        # row i sits in [i, i+1) / total of the year's calls: increasing, and spread as the
        # intensity says
        w = self.world
        target = (i + rng.random()) / self.total * w.hour_cum[-1]
        hour = min(bisect_right(w.hour_cum, target), HOURS - 1)
        before = w.hour_cum[hour - 1] if hour else 0.0
        within = (target - before) / (w.hour_cum[hour] - before)
        return self.start + timedelta(hours=hour + min(within, 0.999_999))

    def event(
        self, rng: random.Random, at: datetime, serial: str, **override: Any
    ) -> UsageRecorded:
        w = self.world
        user = w.users[min(bisect_right(w.user_cum, rng.random() * w.user_cum[-1]), N_USERS - 1)]
        project = user.projects[0] if rng.random() < 0.8 else rng.choice(user.projects)
        site = project.sites[bisect_right(project.site_cum, rng.random() * project.site_cum[-1])]
        m = site.fallback if rng.random() < FALLBACK_RATE else site.model
        provider, model, price_in, price_out, median_ms, _ = MODELS[m]
        prompt_version = None
        if site.prompt is not None:
            progress = (at - self.start) / timedelta(hours=HOURS)
            prompt_version = 1 + min(site.versions - 1, int(max(progress, 0.0) * site.versions))
        prompt_tokens = int(rng.lognormvariate(6.7, 0.9)) + 10  # median ~800
        cached = int(prompt_tokens * rng.uniform(0.2, 0.9)) if rng.random() < 0.2 else 0
        failed = rng.random() < ERROR_RATE
        streamed = not failed and rng.random() < STREAMED
        latency = rng.lognormvariate(math.log(median_ms), 0.6)
        if failed:
            error_type = ERRORS[bisect_right(w.error_cum, rng.random() * w.error_cum[-1])][0]
            completion_tokens, cost, ttft = 0, 0.0, None
            latency = rng.uniform(30_000, 60_000) if error_type == "timeout" else latency / 4
        else:
            error_type = None
            completion_tokens = int(rng.lognormvariate(5.3, 0.8)) + 1  # median ~200
            cost = round(
                (prompt_tokens - cached / 2) * price_in + completion_tokens * price_out, 10
            )
            ttft = round(latency * rng.uniform(0.08, 0.35), 3) if streamed else None
        tags = TAG_SETS[bisect_right(w.tag_cum, rng.random() * w.tag_cum[-1])][0]
        request_id = f"req-{rng.getrandbits(64):016x}-{serial}"
        fields: dict[str, Any] = {
            "user_id": user.name, "team_id": user.team, "project_id": project.name,
            "conversation_id": f"conv-{user.name}-{rng.randrange(50)}" if rng.random() < 0.25 else None,
            "workflow_id": f"wf-{rng.getrandbits(40):010x}" if rng.random() < 0.08 else None,
            "usage_id": f"{request_id}:1", "request_id": request_id,
            "provider": provider, "model": model,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "cached_tokens": cached, "total_tokens": prompt_tokens + completion_tokens,
            "cost_usd": cost, "latency_ms": round(latency, 3), "ttft_ms": ttft,
            "status": "error" if failed else "ok", "error_type": error_type,
            "role": site.role, "prompt_key": site.prompt, "prompt_version": prompt_version,
            "tags": list(tags), "grant_id": None, "reservation_id": None, "attempts": [],
            "occurred_at": at,
        }  # fmt: skip
        fields.update(override)
        # every field given: model_construct skips validation, and defaults cost it ~30x more
        return UsageRecorded.model_construct(**fields)
