"""The body of `llmbus report`: query the usage service, write one self-contained HTML file."""

from pathlib import Path
from typing import Any

from llmbus.cli.commands import console, fail, parse_time, query_client_settings, run


def run_report(out: str, since: str | None, until: str | None) -> None:
    settings = query_client_settings()
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    target = Path(out)
    if target.is_dir():
        fail(f"--out {out} is a folder: name the HTML file to write, e.g. {target / 'report.html'}")
    from llmbus.client import Client
    from llmbus.report.data import collect
    from llmbus.report.page import write

    async def go() -> Any:
        with console.status("querying the usage service…") as status:
            async with Client(settings=settings) as client:
                return await collect(
                    client, start, end, lambda what: status.update(f"querying {what}…")
                )

    report = run(go())
    try:
        written = write(report, target)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    console.print(f"report written to {written}", markup=False, highlight=False, soft_wrap=True)
