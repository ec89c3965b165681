"""Options more than one group of llmbus commands takes."""

from enum import StrEnum
from typing import Annotated

import typer


class ViewFormat(StrEnum):
    table = "table"
    json = "json"


UserOption = Annotated[
    str | None, typer.Option("--user", help="The user_id acting (default: your login name).")
]
