"""A small Starlette app that mounts the browser's and the groups' pages over a real
broker, for their tests until they run in the console's own app (client/console/app.py).

StandInContext has what the pages use of ConsoleContext: ``admin``, ``broker``,
``templates``, ``can_admin``, ``render`` and the confirmation forms' tokens. Errors a
user causes become an error page with the console's statuses (404 for what does not
exist, 403 for what is not permitted, 503 when the broker does not answer, 400 else).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.templating import Jinja2Templates
from starlette.testclient import TestClient

from plinth import errors
from plinth.client.admin import Admin
from plinth.client.connection import broker_address

PAGES_TEMPLATES = Path(__file__).resolve().parents[3] / "client" / "console" / "templates"
STAND_IN_TEMPLATES = Path(__file__).resolve().parent / "templates"


class LockedAdmin(Admin):
    """An Admin any thread may call, one request at a time (as the console's)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._lock = threading.Lock()

    def _call(self, *args, **kwargs):
        with self._lock:
            return super()._call(*args, **kwargs)


class StandInContext:
    def __init__(self, broker_url: str, can_admin: bool = True):
        self.broker = broker_address(broker_url)
        self.admin = LockedAdmin(broker=self.broker)
        self.templates = Jinja2Templates(directory=[str(STAND_IN_TEMPLATES), str(PAGES_TEMPLATES)])
        self.can_admin = can_admin
        self._form_key = secrets.token_bytes(32)

    def form_token(self, action: str) -> str:
        return hmac.new(self._form_key, action.encode(), hashlib.sha256).hexdigest()

    def form_token_ok(self, action: str, token: str) -> bool:
        return hmac.compare_digest(self.form_token(action), token or "")

    def render(self, request, template: str, status_code: int = 200, **context):
        context.setdefault("can_admin", self.can_admin)
        context.update(request=request, fragment=request.headers.get("HX-Request") == "true",
                       console=self)
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)


def status_for(exc: Exception) -> int:
    if isinstance(exc, (errors.UnknownTopicError, errors.UnknownGroupError)):
        return 404
    if isinstance(exc, errors.NotAuthorizedError):
        return 403
    if isinstance(exc, (errors.UnavailableError, errors.PlinthTimeoutError)):
        return 503
    return 400


async def _user_error(request, exc: Exception):
    message = f"{type(exc).__name__}: {exc}" if isinstance(exc, errors.PlinthError) else str(exc)
    return request.app.state.console.render(request, "error.html", status_code=status_for(exc),
                                            title="Error", message=message)


def pages_app(broker_url: str, can_admin: bool = True) -> Starlette:
    from plinth.client.console import pages_browse, pages_groups

    app = Starlette(routes=[*pages_browse.ROUTES, *pages_groups.ROUTES],
                    exception_handlers={errors.PlinthError: _user_error, ValueError: _user_error,
                                        TypeError: _user_error})
    app.state.console = StandInContext(broker_url, can_admin)
    return app


def pages_client(broker_url: str, can_admin: bool = True) -> TestClient:
    """A TestClient over ``pages_app``; an exception no handler takes fails the test."""
    return TestClient(pages_app(broker_url, can_admin), raise_server_exceptions=True)
