"""`llmbus keys`: the HTTP gateway's API keys. Bodies import lazily (cli/keys.py)."""

from typing import Annotated

import typer

keys = typer.Typer(
    help="Issue, list and revoke the HTTP gateway's API keys (admin credentials).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@keys.command("create")
def keys_create(
    user: Annotated[str, typer.Option("--user", help="user_id the key's requests are booked to.")],
    team: Annotated[str | None, typer.Option("--team", help="team_id.")] = None,
    project: Annotated[str | None, typer.Option("--project", help="project_id.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="What the key is for.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="May open the web console.")] = False,
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires",
            help="When it stops working: in 30d or 12h, or at a date or ISO date-time (UTC "
            "unless it names a zone; a date at its midnight). Default: never.",
        ),
    ] = None,
) -> None:
    """Issue a key and print it, once: it is stored only as its SHA-256 and cannot be shown
    again. Give it to the program that calls the gateway."""
    from llmbus.cli.keys import run_create

    run_create(user, team, project, name, admin, expires)


@keys.command("list")
def keys_list(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's keys.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Revoked keys too.")] = False,
) -> None:
    """The keys issued, oldest first: id, whom each is for, when it expires. Never a key."""
    from llmbus.cli.keys import run_list

    run_list(user, everything)


@keys.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, as `llmbus keys list` shows it.")],
) -> None:
    """Stop a key from working, at once; gateways hear of it on llmbus.keys.revoked."""
    from llmbus.cli.keys import run_revoke

    run_revoke(key_id)
