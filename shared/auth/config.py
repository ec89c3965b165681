"""The nats-server configuration llmbus runs with: nkey users in three kinds of account.

- LLMBUS, with JetStream: the operator (unrestricted) and one user per service, each held to
  its row of SERVICE_PERMISSIONS.
- C_<name>, one per active client: one user that may publish only the public requests. They
  reach LLMBUS as llmbus.in.<name>.<...> (a service import), so the subject a service hears names
  the client, whatever the payload says; replies come back only through the client's own
  llmbus.reply.<name>.> import, onto its _INBOX, and its streamed chunks through its
  llmbus.chunk.<name>.> import, onto llmbus.completion.chunk.<request_id>. LLMBUS exports to any account, but only the
  accounts written here exist, and each imports its own name's subjects only.
- SYS, the system account: reloads the configuration when clients change.

The file is JSON, which nats-server's configuration format accepts as it is, so no value needs
quoting rules of its own.
"""

import json
from pathlib import Path

from llmbus.shared import subjects as s
from llmbus.shared.auth.files import AuthFiles
from llmbus.shared.auth.keys import ensure_seed, read_public_key
from llmbus.shared.auth.permissions import (
    SERVICE_PERMISSIONS,
    Permissions,
    client_permissions,
)
from llmbus.shared.auth.registry import load_clients
from llmbus.shared.auth.tls import has_certificates, tls_block
from llmbus.shared.contracts.clients import ClientIdentity

LLMBUS_ACCOUNT = "LLMBUS"
SYSTEM_ACCOUNT = "SYS"


def client_account(name: str) -> str:
    return f"C_{name}"


def ensure_auth(files: AuthFiles) -> AuthFiles:
    """The operator's, the system's and each service's credentials, made on first use, and the
    server configuration written anew from them and the client registry."""
    files.root.mkdir(parents=True, exist_ok=True)
    files.root.chmod(0o700)
    for seed in (files.operator, files.system, *map(files.service, SERVICE_PERMISSIONS)):
        ensure_seed(seed)
    write_server_config(files)
    return files


def write_server_config(files: AuthFiles) -> Path:
    """With TLS where certificates were made for it (`llmbus auth init --tls HOST`)."""
    config = render(files, load_clients(files.registry))
    if has_certificates(files.tls_dir):
        config["tls"] = tls_block(files.tls_dir)
    files.server_config.write_text(json.dumps(config, indent=2) + "\n")
    return files.server_config


def _permissions(permissions: Permissions) -> dict[str, object]:
    publish: dict[str, object] = {"allow": list(permissions.publish)}
    if permissions.deny_publish:
        publish["deny"] = list(permissions.deny_publish)
    return {"publish": publish, "subscribe": {"allow": list(permissions.subscribe)}}


def render(files: AuthFiles, clients: list[ClientIdentity]) -> dict[str, object]:
    active = [client for client in clients if client.active]
    services = [
        {
            "nkey": read_public_key(files.service(name)),
            "permissions": _permissions(p),
        }
        for name, p in SERVICE_PERMISSIONS.items()
    ]
    accounts: dict[str, object] = {
        SYSTEM_ACCOUNT: {"users": [{"nkey": read_public_key(files.system)}]},
        LLMBUS_ACCOUNT: {
            "jetstream": "enabled",
            "users": [{"nkey": read_public_key(files.operator)}, *services],
            "exports": _exports(),
        },
    }
    for client in active:
        accounts[client_account(client.name)] = _client_account(client)
    return {"system_account": SYSTEM_ACCOUNT, "accounts": accounts}


def _exports() -> list[dict[str, object]]:
    """Open to any account, yet only accounts this file defines can import them, and each
    client's imports name its own subjects only. The exports never change as clients come and
    go: nats-server does not apply changed exports to a running account on reload."""
    exports: list[dict[str, object]] = [
        {"service": f"{s.CLIENT_PREFIX}.>"},
        {"stream": f"{s.CLIENT_REPLY_PREFIX}.>"},
        {"stream": f"{s.CLIENT_CHUNK_PREFIX}.>"},
    ]
    return exports + [{"stream": subject} for subject in s.ADMIN_EVENT_SUBJECTS]


def _client_account(client: ClientIdentity) -> dict[str, object]:
    imports: list[dict[str, object]] = [
        {
            "service": {"account": LLMBUS_ACCOUNT, "subject": f"{s.CLIENT_PREFIX}.{client.name}.>"},
            "to": "llmbus.>",
        },
        {
            "stream": {
                "account": LLMBUS_ACCOUNT,
                "subject": f"{s.CLIENT_REPLY_PREFIX}.{client.name}.>",
            },
            "to": s.CLIENT_INBOX_PREFIX + ">",
        },
        {
            "stream": {
                "account": LLMBUS_ACCOUNT,
                "subject": f"{s.CLIENT_CHUNK_PREFIX}.{client.name}.>",
            },
            "to": s.CLIENT_CHUNKS,
        },
    ]
    if client.admin:
        imports += [
            {"stream": {"account": LLMBUS_ACCOUNT, "subject": subject}}
            for subject in s.ADMIN_EVENT_SUBJECTS
        ]
    user = {
        "nkey": client.public_key,
        "permissions": _permissions(client_permissions(client.admin)),
    }
    return {"users": [user], "imports": imports}
