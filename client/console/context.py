"""ConsoleContext: what every page reaches through ``request.app.state.console``.

Created once per app (app.py) in the console's process. Pages run in
Starlette's thread pool (sync endpoints), so ``admin`` is shared by many
threads: it is a broker_calls.ConsoleAdmin, which lends each call an Admin of its
own, within the page's deadline, at most CONSOLE_BROKER_CALLS_MAX at once.
"""

from __future__ import annotations

from pathlib import Path

from starlette.templating import Jinja2Templates

from plinth import limits
from plinth.counted import counted
from plinth.client.connection import BrokerAddress
from plinth.client.console.confirm_tokens import ConfirmTokens, user_of
from plinth.client.console.browse import offset_range
from plinth.client.console.visible_text import visible
from plinth.errors import NotAuthorizedError, PlinthError, UnknownTopicError

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
# A topic name no one creates: describing it tells whether the console's key has
# admin rights on topics (NotAuthorizedError) or not (UnknownTopicError).
_ADMIN_PROBE_TOPIC = "__plinth_console_admin_probe"


class ConsoleContext:
    """The broker connection, the templates and the console's confirmation tokens.
    Any thread may use it."""

    def __init__(self, broker: BrokerAddress, admin, templates: Jinja2Templates, calls=None):
        self.broker = broker
        self.admin = admin   # Admin's methods, any thread (broker_calls.ConsoleAdmin)
        self.calls = calls   # its BrokerCalls: the slots a browse's Consumer takes too
        self.templates = templates
        self._can_admin: bool | None = None
        # Confirmation pages carry a token only this process can make, bound to the
        # plan they show (confirm_tokens.py): an apply changes only what was shown.
        self.confirmations = ConfirmTokens()
        self.sampler = None   # the overview's Sampler (app.py sets it)
        self._streams = 0     # open topic and group streams (the event loop's only)

    @property
    def can_admin(self) -> bool:
        """False when the console's key may not administer topics (asked once, lazily:
        the broker may not be up when the console starts)."""
        if self._can_admin is None:
            try:
                self.admin.describe_topic(_ADMIN_PROBE_TOPIC)
                self._can_admin = True
            except NotAuthorizedError:
                self._can_admin = False
            except UnknownTopicError:
                self._can_admin = True
            except PlinthError:   # no answer now: offer the actions, ask again next time
                return True
        return self._can_admin

    @property
    def can_admin_known(self) -> bool:
        """``can_admin`` as far as known, without asking the broker (True until known):
        for pages drawn on the event loop, such as the error pages."""
        return True if self._can_admin is None else self._can_admin

    def streams_open(self, change: int) -> None:
        """Count a topic or group page's live stream opening (+1) or closing (-1);
        ValueError past limits.CONSOLE_SSE_CLIENTS_MAX. The event loop's thread only."""
        if change > 0 and self._streams >= limits.CONSOLE_SSE_CLIENTS_MAX:
            raise ValueError(f"{self._streams} live topic and group pages are open; at most "
                             f"{limits.CONSOLE_SSE_CLIENTS_MAX}")
        self._streams += change

    def confirm_token(self, request, action: str, resource: str, plan) -> str:
        """The token a confirmation page showing ``plan`` (``action`` on ``resource``)
        gives its apply form, for the user who sent ``request``."""
        return self.confirmations.make(action, resource, plan, user_of(request))

    def check_confirmation(self, request, action: str, resource: str, plan, form) -> None:
        """StaleConfirmationError (a 400 page) unless ``form``'s token was made for
        exactly ``plan``, for this user, and has not expired."""
        self.confirmations.check(action, resource, plan, user_of(request), form.get("token"))

    def render(self, request, template: str, status_code: int = 200, **context):
        """The page, or only its content block when htmx asks (HX-Request header): a
        template extending base.html renders just its ``content`` block then."""
        fragment = request.headers.get("HX-Request") == "true"
        if "can_admin" not in context:
            context["can_admin"] = self.can_admin
        context.update(request=request, fragment=fragment, console=self)
        return self.templates.TemplateResponse(request, template, context,
                                               status_code=status_code)


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    env = templates.env
    env.filters["bytes"] = human_bytes
    env.filters["rate"] = human_rate
    env.filters["counted"] = counted   # {{ n | counted("partition") }}: "1 partition"
    # {{ text | visible }}: a user's text with bidi overrides and other hidden
    # characters shown as escapes (visible_text.py), HTML-escaped.
    env.filters["visible"] = visible
    # {{ start | offsets_to(end) }}: "0 to 39080", both held, for an end that is the
    # next offset (a log's end, a remote range's): "0–39081" read as holding 39081.
    env.filters["offsets_to"] = lambda start, end: offset_range(start, end)
    return templates


def human_bytes(value) -> str:
    if value is None:
        return "—"
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def human_rate(value) -> str:
    if value is None:
        return "—"
    value = float(value)
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k"
    return f"{value:.1f}"
