"""``create_app``: the console's Starlette app, its routes and its error pages.

Built once in the console's process (runner.py, or a test's TestClient), with
the routes of every page module (pages_*.py).

Every response carries the anti-framing headers, and a state-changing request
from another site is refused with a 403 page (cross_site.py, the outermost
middleware).

Errors: a plinth error, ValueError or TypeError raised by a page is the user's
(a bad offset, an unknown topic, a refused action): it becomes a page saying
what was wrong, with 404 for what does not exist, 403 for what the console's
key may not do, 503 when the broker does not answer, 502 when its answer
cannot be read, else 400. Anything else
is a bug: a 500 page with a short message, and the traceback in the log only.
"""

from __future__ import annotations

import contextlib
import logging

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from plinth import errors
from plinth.client.connection import broker_address
from plinth.client.console.config import ConsoleConfig
from plinth.client.console.cross_site import CrossSiteGuard, frame
from plinth.client.console.broker_calls import BrokerCalls, ConsoleAdmin, page_deadline
from plinth.client.console.context import STATIC_DIR, ConsoleContext, make_templates
from plinth.client.console.sampler import Sampler

log = logging.getLogger(__name__)

def create_app(config: ConsoleConfig) -> Starlette:
    from plinth.client.console import pages_browse, pages_groups, pages_overview, pages_topics

    broker = broker_address(config.broker, config.curve_key_file, config.curve_server_key_file)
    calls = BrokerCalls(broker, config.request_timeout_ms)
    admin = ConsoleAdmin(calls)
    context = ConsoleContext(broker, admin, make_templates(), calls)
    context.sampler = Sampler(admin.background(), interval_s=config.sample_interval_s,
                              broker_url=broker.url)
    routes = [*pages_overview.ROUTES, *pages_topics.ROUTES, *pages_browse.ROUTES,
              *pages_groups.ROUTES]
    routes.append(Mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static"))
    # Every browser asks for it; a 404 was the only error in its console log.
    routes.append(Route("/favicon.ico", lambda request: Response(status_code=204)))
    # The guard first (outermost): its frame headers go on the login's 401 too, and
    # a cross-site post is refused before its credentials cost a scrypt.
    # Compressed: htmx is 52 KB as it is, 17 KB gzipped. Starlette's GZip leaves
    # text/event-stream alone, so the live charts are not held back in a buffer.
    middleware = [Middleware(CrossSiteGuard, refusal=_cross_site_refusal, routes=routes),
                  Middleware(GZipMiddleware, minimum_size=1024), Middleware(PageDeadline)]
    if config.auth_file is not None:
        from plinth.client.console.auth import AuthFile, AuthMiddleware

        middleware.append(Middleware(AuthMiddleware, auth=AuthFile.load(config.auth_file)))
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={errors.PlinthError: _user_error, ValueError: _user_error,
                                        TypeError: _user_error, 404: _not_found,
                                        405: _not_found, Exception: _server_error},
                    lifespan=_closing(admin))
    app.state.console = context
    app.state.config = config
    return app


class PageDeadline:
    """Every request's calls to the broker share one deadline
    (limits.CONSOLE_PAGE_DEADLINE_MS, broker_calls.py), set here on the event loop;
    the page's pool thread runs in a copy of this context and sees it. A live stream
    outlives it: its events set their own."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        with page_deadline():
            await self.app(scope, receive, send)


def _closing(admin):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            admin.close()

    return lifespan


def status_for(exc: Exception) -> int:
    if isinstance(exc, (errors.UnknownTopicError, errors.UnknownGroupError,
                        errors.RecordNotFoundError)):
        return 404
    if isinstance(exc, errors.NotAuthorizedError):
        return 403
    if isinstance(exc, (errors.UnavailableError, errors.PlinthTimeoutError)):
        return 503
    if isinstance(exc, errors.MalformedReplyError):   # the broker's answer, not the user's input
        return 502
    return 400


def _message(exc: Exception) -> str:
    if isinstance(exc, errors.NotAuthorizedError):
        return f"not permitted: the console's key may not do this ({exc})"
    if isinstance(exc, errors.PlinthError):
        return f"{type(exc).__name__}: {exc}"
    return str(exc)


def _error_page(request, status: int, title: str, message: str, **context):
    ctx = request.app.state.console
    # On the event loop: what the console knows of its rights, never a broker call (a
    # broker that does not answer would hold every page up for a whole call).
    context.setdefault("can_admin", ctx.can_admin_known)
    return ctx.render(request, "error.html", status_code=status, title=title, message=message,
                      **context)


async def _cross_site_refusal(scope, message: str):
    # On the event loop: can_admin given, so that the page never asks the broker
    # (the error page does not use it).
    return _error_page(Request(scope), 403, "Refused: not from this console's pages",
                       message, can_admin=False)


async def _user_error(request, exc: Exception):
    status = status_for(exc)
    title = {404: "Not found", 403: "Not permitted", 502: "Unreadable broker reply",
             503: "Broker unavailable"}.get(
        status, "Bad request")
    if isinstance(exc, errors.RemoteStorageUnavailableError):
        title = "Object storage unavailable"   # the broker answered; its store did not
    return _error_page(request, status, title, _message(exc))


async def _not_found(request, exc):
    status = getattr(exc, "status_code", 404)
    page = _error_page(request, status, "Not found" if status == 404 else "Not allowed",
                       f"{request.method} {request.url.path}: {getattr(exc, 'detail', '')}")
    page.headers.update(getattr(exc, "headers", None) or {})   # a 405's Allow
    return page


async def _server_error(request, exc: Exception):
    log.exception("console: %s %s failed", request.method, request.url.path, exc_info=exc)
    # Starlette sends this page from outside the app's middleware: framed here.
    return frame(_error_page(request, 500, "Console error",
                             f"the console failed on this page ({type(exc).__name__}); "
                             f"its log has the details"))
