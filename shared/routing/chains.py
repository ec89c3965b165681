"""A role's chain: the models it tries, in order, once fallbacks that name other roles are
expanded. A loop of roles, or a model named twice in one chain, is a configuration error."""

from collections.abc import Mapping

from llmbus.shared.errors import ConfigError
from llmbus.shared.routing.config import RoleEntry


class FallbackCycleError(ConfigError):
    """Fallbacks that lead back to where they started."""


def chains(roles: Mapping[str, RoleEntry]) -> dict[str, list[str]]:
    """Every role's chain of model names; FallbackCycleError names each loop found."""
    found: dict[str, list[str]] = {}
    problems: list[str] = []
    for name in roles:
        try:
            found[name] = expand(roles, name)
        except FallbackCycleError as cycle:
            problems.append(str(cycle))
    if problems:
        raise FallbackCycleError("; ".join(problems))
    return found


def expand(roles: Mapping[str, RoleEntry], name: str, path: tuple[str, ...] = ()) -> list[str]:
    """The models role `name` tries. A fallback that names a role stands for that role's chain;
    `model` and `candidates` always name models."""
    if name in path:
        raise FallbackCycleError(f"fallback cycle: {' -> '.join((*path, name))}")
    role = roles[name]
    chain: list[str] = []
    entries = role.names if role.strategy == "cheapest-capable" else [role.model or ""]
    for model in entries:
        add(chain, model, (*path, name))
    for fallback in role.fallbacks:
        if fallback in roles:
            for model in expand(roles, fallback, (*path, name)):
                add(chain, model, (*path, name, fallback))
        else:
            add(chain, fallback, (*path, name))
    return chain


def add(chain: list[str], model: str, path: tuple[str, ...]) -> None:
    if model in chain:
        raise FallbackCycleError(
            f"fallback cycle: {' -> '.join(path)} names {model!r} twice, so it would fall back "
            "to a model that already failed"
        )
    chain.append(model)
