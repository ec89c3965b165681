"""`llmbus clients`: credentials for the programs and people that use llmbus."""

from typing import Annotated

import typer

clients = typer.Typer(
    help="Issue and revoke client credentials (who may do what on NATS).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@clients.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The client's name: a-z, 0-9, - and _.")],
    user: Annotated[str, typer.Option("--user", help="user_id its requests are booked to.")],
    team: Annotated[str | None, typer.Option("--team", help="team_id.")] = None,
    project: Annotated[str | None, typer.Option("--project", help="project_id.")] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="May act for anyone, set budgets, edit any prompt.")
    ] = False,
) -> None:
    """Issue credentials and print the path of the file that holds them (give it to the
    client as NATS_CREDS, --creds or Client(creds=...)). The stack must be running."""
    from llmbus.cli.clients import run_create

    run_create(name, user, team, project, admin)


@clients.command("list")
def listing() -> None:
    """Every client issued, revoked ones too (a name is never given out twice)."""
    from llmbus.cli.clients import run_list

    run_list()


@clients.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The client to cut off.")]) -> None:
    """Revoke a client's credentials: it is disconnected and cannot connect again."""
    from llmbus.cli.clients import run_revoke

    run_revoke(name)


@clients.command("init")
def init(
    tls_host: Annotated[
        list[str] | None,
        typer.Option("--tls-host", help="Serve TLS, with a certificate for this host. Repeatable."),
    ] = None,
) -> None:
    """Make the operator's, the system's and each service's credentials and the nats-server
    configuration in the state folder, as `llmbus up` does on its first start: for a NATS
    server run elsewhere (docker-compose runs this once, with --tls-host nats)."""
    from llmbus.cli.clients import run_init

    run_init(tls_host or [])
