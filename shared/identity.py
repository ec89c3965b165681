"""Who is asking: the caller a request came from, and what its credentials allow.

A request that arrives on llmbus's own account (a service, the operator) is trusted: `caller()`
is None and the payload says whom it is for. One from a client's account carries that client's
ClientIdentity, set by the rpc layer (or the completion intake) for the request's handling. A
context variable carries it so that only the handlers that decide something read it.
"""

from contextvars import ContextVar

from llmbus.shared.contracts.clients import ClientIdentity
from llmbus.shared.errors import ForbiddenError

_caller: ContextVar[ClientIdentity | None] = ContextVar("llmbus_caller", default=None)


def caller() -> ClientIdentity | None:
    return _caller.get()


def set_caller(identity: ClientIdentity | None) -> None:
    """For the handling of one request: each is handled in a task of its own."""
    _caller.set(identity)


def is_admin(identity: ClientIdentity | None) -> bool:
    return identity is None or identity.admin


def require_admin(identity: ClientIdentity | None, action: str) -> None:
    if not is_admin(identity):
        assert identity is not None
        raise ForbiddenError(f"{action} needs admin credentials; client {identity.name!r} is not")


def owner(identity: ClientIdentity | None) -> str | None:
    """What a request, conversation or turn id is owned by: the client's name (None: trusted)."""
    return None if identity is None else identity.name


def book(
    identity: ClientIdentity | None,
    user_id: str | None,
    team_id: str | None,
    project_id: str | None,
) -> tuple[str | None, str | None, str | None]:
    """The user, team and project a request is booked to. Trusted callers and admins: as the
    payload says (an admin's own where it says nothing). Any other client: its credentials';
    a payload naming someone else is refused, never silently rebooked."""
    if identity is None:
        return user_id, team_id, project_id
    if identity.admin:
        return (
            user_id or identity.user_id,
            team_id or identity.team_id,
            project_id or identity.project_id,
        )
    for field, asked, own in (
        ("user_id", user_id, identity.user_id),
        ("team_id", team_id, identity.team_id),
        ("project_id", project_id, identity.project_id),
    ):
        if asked is not None and asked != own:
            held = f"{own!r}" if own is not None else "none"
            raise ForbiddenError(
                f"client {identity.name!r} books requests to {field} {held}; "
                f"the request names {asked!r}"
            )
    return identity.user_id, identity.team_id, identity.project_id
