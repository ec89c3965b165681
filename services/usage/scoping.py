"""What a client may see of usage and budgets: its own, unless its credentials are admin's
(shared.identity). Trusted callers (services, the operator) see everything."""

from llmbus.shared.contracts import UsageQuery, UsageRowsQuery
from llmbus.shared.contracts.budget import RequestAttributes
from llmbus.shared.contracts.clients import ClientIdentity
from llmbus.shared.errors import ForbiddenError
from llmbus.shared.identity import book, is_admin


def own_usage(identity: ClientIdentity | None, query: UsageQuery) -> UsageQuery:
    """The query, narrowed to the client's own user; asking about another user is refused."""
    if is_admin(identity):
        return query
    assert identity is not None
    asked = query.filters.get("user")
    if asked is not None and asked != identity.user_id:
        raise ForbiddenError(
            f"client {identity.name!r} may query the usage of user {identity.user_id!r} only; "
            "usage of other users needs admin credentials"
        )
    return query.model_copy(update={"filters": query.filters | {"user": identity.user_id}})


def own_rows(identity: ClientIdentity | None, query: UsageRowsQuery) -> UsageRowsQuery:
    """An export's query, narrowed as own_usage narrows a usage query."""
    filters = own_usage(identity, UsageQuery(filters=query.filters)).filters
    return query.model_copy(update={"filters": filters})


def own_attributes(
    identity: ClientIdentity | None, attributes: RequestAttributes
) -> RequestAttributes:
    user, team, project = book(identity, attributes.user, attributes.team, attributes.project)
    return attributes.model_copy(update={"user": user, "team": team, "project": project})


def applies_to(identity: ClientIdentity | None, scope: dict[str, str]) -> bool:
    """Whether a budget of this scope counts a client's requests (admins: every budget)."""
    if is_admin(identity):
        return True
    assert identity is not None
    own = {"user": identity.user_id, "team": identity.team_id, "project": identity.project_id}
    return all(scope[key] == value for key, value in own.items() if key in scope)
