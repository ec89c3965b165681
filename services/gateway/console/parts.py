"""What every console handler reaches: the console's own parts (its templates, the budget feed),
the gateway's (settings, key check, completions) and the SDK client on the gateway's one NATS
connection, through which every piece of data comes."""

import asyncio
from dataclasses import dataclass, field

from aiohttp import web
from jinja2 import Environment

from llmbus.client import Client
from llmbus.services.gateway.console.feed import BudgetFeed
from llmbus.services.gateway.handlers import GATEWAY, Gateway
from llmbus.shared.contracts.keys import KeyInfo


@dataclass
class Console:
    env: Environment
    feed: BudgetFeed = field(default_factory=BudgetFeed)
    # set when the gateway stops: the event streams end, rather than hold its shutdown
    closing: asyncio.Event = field(default_factory=asyncio.Event)


CONSOLE = web.AppKey("console", Console)
# the admin key's holder, once the session check let the request in
ADMIN = web.RequestKey("console_admin", KeyInfo)


def console(request: web.Request) -> Console:
    return request.app[CONSOLE]


def gateway(request: web.Request) -> Gateway:
    return request.config_dict[GATEWAY]


def client(request: web.Request) -> Client:
    return gateway(request).completions.client


def me(request: web.Request) -> KeyInfo:
    return request[ADMIN]
