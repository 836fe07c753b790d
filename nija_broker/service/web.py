"""The live web page on the API's address: a shell of static files that reads the JSON API.

Routes (GET; each also answers HEAD)::

    /                        the accounts, a row each
    /accounts/{id}           one account: charts, orders, positions, trades, decisions, controls
    /web/{name}              the page's script, style sheet and the vendored uPlot (web/README.md)

The shell is the same bytes for every visitor and every account (the page reads
the account id from its own address), carries no account data, and is served
without the bearer token: a browser cannot send ``Authorization`` when it
navigates. Everything the page shows comes from ``/v1/...`` fetches, which send
the token the page asks for once and keeps in the tab's ``sessionStorage``; those
endpoints keep the API's token rules (401 without it).

Without a token (the API then listens on loopback only) the browser's same-origin
rules are all that keeps another web site from the API, and two holes remain:
a page of another site may *send* a request (a form's POST needs no CORS
permission: it could pause an account or cancel an order), and a DNS name of
the attacker's that points to 127.0.0.1 makes the API "same origin" to it (DNS
rebinding). So a tokenless API refuses (403) a request whose ``Origin`` is not
its own and one whose ``Host`` is not a loopback name: :func:`cross_site_refusal`.
With a token neither can succeed (a cross-site page cannot read the token nor
send the header without a CORS preflight, which the API never grants).

Every file answers with a Content-Security-Policy that allows only this origin's
scripts, styles and fetches, and no framing (so no other page can overlay the
page's buttons).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from types import MappingProxyType

from aiohttp import web

__all__ = ["ASSETS", "add_web_routes", "cross_site_refusal", "is_shell"]

ASSETS: Mapping[str, str] = MappingProxyType(
    {
        "index.html": "text/html; charset=utf-8",
        "account.html": "text/html; charset=utf-8",
        "app.css": "text/css; charset=utf-8",
        "app.js": "text/javascript; charset=utf-8",
        "uPlot.iife.min.js": "text/javascript; charset=utf-8",
        "uPlot.min.css": "text/css; charset=utf-8",
    }
)
"""Every file the page is made of (in ``nija_broker/service/web/``), by its content type.
Only these are served: a name is looked up here, never joined to a path."""

_PAGES = frozenset({"index.html", "account.html"})

_Handler = Callable[[web.Request], Awaitable[web.Response]]

_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        # Small files on loopback: always revalidated, so an upgrade shows at once.
        "Cache-Control": "no-cache",
    }
)


def _load() -> dict[str, bytes]:
    folder = resources.files("nija_broker.service").joinpath("web")
    return {name: folder.joinpath(name).read_bytes() for name in ASSETS}


def _file(files: Mapping[str, bytes], name: str) -> web.Response:
    return web.Response(body=files[name], headers={**_HEADERS, "Content-Type": ASSETS[name]})


def _handlers(files: Mapping[str, bytes]) -> tuple[_Handler, _Handler, _Handler]:
    async def index(request: web.Request) -> web.Response:
        return _file(files, "index.html")

    async def account(request: web.Request) -> web.Response:
        return _file(files, "account.html")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS or name in _PAGES:
            return web.json_response(
                {"error": f"no such file of the web page: {name!r}", "field": "name"},
                status=404,
            )
        return _file(files, name)

    return index, account, asset


_SHELL: web.AppKey[frozenset[object]] = web.AppKey("web_shell_handlers", frozenset)


def add_web_routes(app: web.Application) -> None:
    """Serve the page's shell on ``app`` (files read once, here)."""
    index, account, asset = _handlers(_load())
    app.router.add_get("/", index)
    app.router.add_get("/accounts/{account_id}", account)
    app.router.add_get("/web/{name}", asset)
    app[_SHELL] = frozenset({index, account, asset})


def is_shell(request: web.Request) -> bool:
    """The request is for the page's shell (served without the token: it holds no data)."""
    if request.method not in ("GET", "HEAD"):
        return False
    shell = request.app.get(_SHELL, frozenset())
    return request.match_info.route.handler in shell


def _loopback_host(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host  # name:port
    if name.startswith("[") and "]" in name:  # [::1]:8765
        name = name[1 : name.index("]")]
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def cross_site_refusal(request: web.Request, token: str | None) -> tuple[str, str] | None:
    """Why a request from another web site is refused, and the header at fault, or ``None``.

    Only without a token (see the module's docstring); clients that are not browsers
    send no ``Origin`` and name the loopback address they connect to.
    """
    if token:
        return None
    host = request.headers.get("Host")
    if host is not None and not _loopback_host(host):
        return (
            f"Host {host!r} is not a loopback name: without a token the API answers only "
            "requests addressed to 127.0.0.1, [::1] or localhost (so no web site can reach "
            "it through a DNS name of its own); set api.token_env to serve other names",
            "Host",
        )
    origin = request.headers.get("Origin")
    if origin is not None and (host is None or origin != f"{request.scheme}://{host}"):
        return (
            f"a request from the web page at {origin!r} is refused: without a token the API "
            "answers only its own page and clients that are not browsers",
            "Origin",
        )
    return None
