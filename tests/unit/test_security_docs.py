"""docs/security.md shows the permissions the server is configured with, no more, no less."""

import re
from pathlib import Path

from llmbus.shared.auth.permissions import SERVICE_PERMISSIONS, client_permissions

PAGE = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def rows() -> dict[str, tuple[list[str], list[str]]]:
    found = {}
    for line in PAGE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].endswith(("service", "client")):
            publish, subscribe = (re.findall(r"`([^`]+)`", cell) for cell in cells[1:])
            found[cells[0]] = (publish, subscribe)
    return found


def test_the_permission_table_is_the_one_the_server_runs_with() -> None:
    table = rows()
    for service, permissions in SERVICE_PERMISSIONS.items():
        publish, subscribe = table[f"{service} service"]
        assert publish == list(permissions.publish), service
        assert subscribe == list(permissions.subscribe), service
    client = client_permissions(admin=False)
    assert table["client"] == (list(client.publish), list(client.subscribe))
    assert table["admin client"][1] == list(client_permissions(admin=True).subscribe)
