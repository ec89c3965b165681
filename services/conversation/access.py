"""Who may ask the conversation service for what (shared.identity gives the caller).

A client acts for its credentials' user only; an admin client or a trusted caller (a service)
for any user. A managed prompt is changed with admin credentials, or with those of the team
whose client created it; reading and rendering prompts is open to every client.
"""

from llmbus.services.conversation.domain.prompt import ManagedPrompt
from llmbus.shared.contracts.clients import ClientIdentity
from llmbus.shared.errors import ForbiddenError
from llmbus.shared.identity import caller, is_admin


def acting_for(user_id: str) -> str:
    """The user a conversation request acts for, as its payload names it: any user for a
    trusted caller or an admin client; only its own credentials' user for any other client,
    which is refused rather than served as someone else."""
    identity = caller()
    if is_admin(identity):
        return user_id
    assert identity is not None
    if identity.user_id != user_id:
        raise ForbiddenError(
            f"client {identity.name!r} acts for user_id {identity.user_id!r} only; the request "
            f"names {user_id!r}. Acting for another user needs admin credentials"
        )
    return user_id


def owning_team(identity: ClientIdentity | None) -> str | None:
    """The team a new prompt belongs to: a client's team when it is no admin's (its team may
    change it later); none when an admin or a trusted caller creates it (admins change it)."""
    if is_admin(identity):
        return None
    assert identity is not None
    if identity.team_id is None:
        raise ForbiddenError(
            f"creating a prompt needs admin credentials or a team; client {identity.name!r} "
            "has neither"
        )
    return identity.team_id


def check_may_change(identity: ClientIdentity | None, prompt: ManagedPrompt, action: str) -> None:
    if is_admin(identity):
        return
    assert identity is not None
    if prompt.team_id is not None and identity.team_id == prompt.team_id:
        return
    needed = "admin credentials"
    if prompt.team_id is not None:
        needed += f" or team {prompt.team_id!r}'s"
    raise ForbiddenError(
        f"{action} prompt {prompt.key!r} needs {needed}; client {identity.name!r} has neither"
    )
