"""A TLS-terminating reverse proxy in front of the gateway, as nginx or a cloud load balancer
puts one: browsers speak https to it, it speaks http to the gateway and, as nginx does by
default, sends the gateway's own host (not the browser's) and no X-Forwarded headers. Its
certificate comes from a throwaway CA (trustme); the browser is told to accept it."""

import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import trustme
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

# what a proxy does not pass on: the connection's own headers, and the body's framing, which
# aiohttp sets again for what it forwards (it has already decoded any compression)
HOP = {hdrs.HOST, hdrs.CONNECTION, hdrs.TRANSFER_ENCODING, hdrs.CONTENT_LENGTH,
       hdrs.CONTENT_ENCODING, hdrs.KEEP_ALIVE}  # fmt: skip


@dataclass
class Front:
    url: str
    upstream: str = ""  # the gateway's URL: set, and changed, while the front runs


def _passed_on(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    kept = CIMultiDict(headers)
    for name in HOP:
        kept.popall(name, None)
    return kept


@contextlib.asynccontextmanager
async def tls_front() -> AsyncIterator[Front]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    front = Front(url="")
    async with aiohttp.ClientSession(auto_decompress=True) as session:

        async def forward(request: web.Request) -> web.StreamResponse:
            async with session.request(
                request.method, front.upstream + request.path_qs, data=await request.read(),
                headers=_passed_on(request.headers), allow_redirects=False,
            ) as answer:  # fmt: skip
                response = web.StreamResponse(
                    status=answer.status, headers=_passed_on(answer.headers)
                )
                await response.prepare(request)
                async for chunk in answer.content.iter_any():  # streams, as the console's are
                    await response.write(chunk)
                await response.write_eof()
                return response

        app = web.Application()
        app.router.add_route("*", "/{path:.*}", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = runner.addresses[0][1]
        front.url = f"https://127.0.0.1:{port}"
        try:
            yield front
        finally:
            await runner.cleanup()
