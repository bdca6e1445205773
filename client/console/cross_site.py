"""CrossSiteGuard: what keeps a page on another web site from using a visitor's
console. Two attacks, two defences, in one pure ASGI middleware, the outermost
of the app's (app.py); it runs on the server's event loop.

- Clickjacking (a console page in an invisible frame over a decoy button):
  every response it passes carries ``X-Frame-Options: DENY`` and
  ``Content-Security-Policy: frame-ancestors 'none'`` (the directive is added to
  a Content-Security-Policy the response already has), so no browser draws a
  console page inside another site's page.
- Cross-site requests (another site's form posting to the console, which the
  browser sends with the visitor's login, or to a loopback console that has
  none): a request of a method that may change state (any but GET, HEAD,
  OPTIONS and TRACE) is answered 403, before any page or the login runs,
  unless its ``Origin`` header, or without one its ``Referer``, is the
  console's own origin: the scheme it serves and the host and port its
  ``Host`` header names (default ports made explicit, names compared without
  case). An ``Origin: null`` (a sandboxed frame, a redirect across sites) is
  not the console's.

Matching Origin against Host is enough because Host is checked too: a loopback
console answers only loopback Host names (runner.LoopbackHostOnly), so a site
that renames 127.0.0.1 to one of its own (DNS rebinding) gets 421 before it
gets here; a console beyond loopback needs a login, which a browser sends only
to the origin that asked for it, and TLS, whose certificate a renamed host
does not match.

Frames and Origin are what a browser enforces; the confirmation tokens
(confirm_tokens.py) are the second line, for a browser that sends neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from starlette.responses import Response

# Methods that only read: the console's GET pages change nothing (the dry runs
# and confirmations are GETs or POSTs that only show; every change is a POST).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
FRAME_HEADERS = ((b"x-frame-options", b"DENY"),)
FRAME_ANCESTORS = b"frame-ancestors 'none'"
_DEFAULT_PORTS = {"http": 80, "https": 443}

# A page for a refused request: (scope, message) -> an ASGI response. app.py
# passes one that renders the console's error page.
Refusal = Callable[[dict, str], Awaitable["Response"]]


def add_frame_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` (a response's, lower-case names as ASGI gives them) with the
    anti-framing headers: X-Frame-Options replaced, frame-ancestors added to the
    Content-Security-Policy or one made of it alone."""
    out = [(name, value) for name, value in headers if name.lower() != b"x-frame-options"]
    out.extend(FRAME_HEADERS)
    for index, (name, value) in enumerate(out):
        if name.lower() == b"content-security-policy":
            if b"frame-ancestors" not in value.lower():
                policy = value.rstrip().rstrip(b";")
                out[index] = (name, policy + b"; " + FRAME_ANCESTORS if policy
                              else FRAME_ANCESTORS)
            return out
    out.append((b"content-security-policy", FRAME_ANCESTORS))
    return out


def frame(response: "Response") -> "Response":
    """``response`` with the anti-framing headers, for a response that does not pass
    through CrossSiteGuard (Starlette's 500 page is sent from outside every
    middleware of the app's, app.py)."""
    response.raw_headers = add_frame_headers(response.raw_headers)
    return response


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host in lower case, port) of an origin or URL, or None for one that
    is not http(s)://host[:port] ("null", a bad port, no host)."""
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:       # a port that is not a number, or out of range
        return None
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port


def refusal_reason(scope) -> str | None:
    """Why a request must be refused as cross-site, or None to let it through."""
    if scope["method"].upper() in SAFE_METHODS:
        return None
    headers = {name.lower(): value.decode("latin-1")
               for name, value in scope.get("headers") or []}
    own = origin_of(f"{scope.get('scheme', 'http')}://{headers.get(b'host', '')}")
    if own is None:
        return "the request names no valid Host, so the console cannot tell its own origin"
    claimed = headers.get(b"origin")
    source = "Origin"
    if claimed is None:
        claimed, source = headers.get(b"referer"), "Referer"
    if claimed is None:
        # Neither header: refused, as Django refuses it over HTTPS. Every current
        # browser sends Origin with a POST, same-site or not, so the console's own
        # forms always carry it, and nothing else of Plinth posts to the console
        # (the CLI and the client library talk to the broker); a browser that
        # sent neither could be one whose post another site made. A script that
        # means to post can send the console's origin itself (curl -H Origin:).
        return ("a change must come from the console's own pages, and this request "
                "says neither where it comes from (no Origin or Referer header)")
    if origin_of(claimed) != own:
        return (f"a change must come from the console's own pages, and this request "
                f"comes from another site: {source} {claimed[:200]!r} is not "
                f"{own[0]}://{own[1]}:{own[2]}")
    return None


class CrossSiteGuard:
    """Pure ASGI middleware: the frame headers on every HTTP response; 403 (the
    ``refusal`` page) for a state-changing request from another origin to a page
    that takes it. A request no route of ``routes`` takes (no page has that method
    at that path) goes on to the router, which answers it 404, or 405 with an
    Allow header, and runs no page: nothing to guard, and a 403 would tell an
    operator trying ``DELETE /`` that the method exists."""

    def __init__(self, app, refusal: Refusal, routes=()):
        self.app = app
        self.refusal = refusal
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_framed(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": add_frame_headers(list(message.get("headers")
                                                                        or []))}
            await send(message)

        reason = refusal_reason(scope)
        if reason is not None and self._taken_by_a_page(scope):
            response = await self.refusal(scope, reason)
            return await response(scope, receive, send_framed)
        return await self.app(scope, receive, send_framed)

    def _taken_by_a_page(self, scope) -> bool:
        from starlette.routing import Match

        return any(route.matches(scope)[0] == Match.FULL for route in self.routes)
