"""BrokerCalls: how the console asks the broker anything, bounded in time and in number.

Two bounds, so that a broker (or one shard) that does not answer costs the console
a few seconds per page and never a queue:

- One deadline per page: ``page_deadline()`` (app.py's PageDeadline middleware,
  around each request; the samplers, around each sample) starts
  limits.CONSOLE_PAGE_DEADLINE_MS; every call made under it waits only for what is
  left of it, and once it has passed a call fails at once, naming the broker that did
  not answer within it. Before, each call waited a whole request timeout (30 s), in
  series, behind one shared lock.
- At most limits.CONSOLE_BROKER_CALLS_MAX calls in flight, each on an Admin (one
  connection) of its own, taken from an idle pool; past that bound a call raises
  ConsoleBusyError (a 503) at once rather than wait behind calls whose browsers
  may have gone. Background work (the overview's sampler, the lag watch) may hold
  at most half of them.

The deadline is a context variable: Starlette's thread pool runs a sync page in a
copy of the request's context, so a page's calls, made in its pool thread, see it.
Any thread may use a BrokerCalls.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time

from plinth import limits
from plinth.client.admin import Admin, NewTopic, timed_change
from plinth.client.connection import RETRIED_ERRORS
from plinth.errors import PlinthTimeoutError, UnavailableError

# The monotonic time (s) by which the current page must have its answers; None
# outside a page (each call then gets a deadline of its own).
_deadline_s: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "console_page_deadline_s", default=None)


class ConsoleBusyError(UnavailableError):
    """The console has CONSOLE_BROKER_CALLS_MAX calls to the broker in flight: a 503
    at once. Raised in the console only, never sent on the wire."""


@contextlib.contextmanager
def page_deadline(deadline_ms: float = limits.CONSOLE_PAGE_DEADLINE_MS):
    """The calls made inside share one deadline, ``deadline_ms`` from now."""
    token = _deadline_s.set(time.monotonic() + deadline_ms / 1000)
    try:
        yield
    finally:
        _deadline_s.reset(token)


def remaining_ms() -> float:
    """What is left of the current page's deadline (a whole one outside a page)."""
    deadline_s = _deadline_s.get()
    if deadline_s is None:
        return float(limits.CONSOLE_PAGE_DEADLINE_MS)
    return (deadline_s - time.monotonic()) * 1000


def no_answer(url: str, detail: str = "") -> PlinthTimeoutError:
    """The error of a page whose broker did not answer within the deadline."""
    deadline_s = limits.CONSOLE_PAGE_DEADLINE_MS / 1000
    return PlinthTimeoutError(f"the broker at {url} did not answer within {deadline_s:g} s "
                              f"(the console's page deadline){': ' + detail if detail else ''}")


class DeadlineAdmin(Admin):
    """An Admin whose every call waits at most what is left of the page's deadline
    (and never more than ``request_timeout_ms``). One thread at a time, as an Admin:
    BrokerCalls lends it to one call at a time."""

    def __init__(self, *, broker, request_timeout_ms: float):
        super().__init__(broker=broker, request_timeout_ms=request_timeout_ms)
        self._timeout_ms_max = self.request_timeout_ms

    def _call(self, encode, *args, retry: bool = True, retried: tuple = RETRIED_ERRORS):
        left_ms = min(self._timeout_ms_max, remaining_ms())
        if left_ms < 1:
            raise no_answer(self._conn.url, "nothing more is asked for this page")
        self.request_timeout_ms = left_ms
        try:
            return super()._call(encode, *args, retry=retry, retried=retried)
        except PlinthTimeoutError as exc:
            raise no_answer(self._conn.url, str(exc)) from None

    def _change(self, encode, *args, retry: bool = True):
        # A change (create, alter, delete) is not cut to the page's deadline: the broker
        # may take longer to make it, and one given up on half-way is worse than a wait.
        self.request_timeout_ms = self._timeout_ms_max
        return Admin._call(self, timed_change(encode, self._timeout_ms_max), *args, retry=retry)


    def validate_new_topic(self, name: str, partitions: int, replication_factor: int | None,
                           config: dict[str, str]) -> None:
        """The broker's verdict on creating this topic, nothing created: createTopics
        with validateOnly (the controller's every check of a create: the name, reserved
        and colliding names, the count, the factor, each config key and value), raising
        what the create would. Within the page's deadline, as any question
        (``create_topics`` sends a validate-only one through ``_call``)."""
        self.create_topics([NewTopic(name, partitions, config, replication_factor or 0)],
                           validate_only=True)


class BrokerCalls:
    """The console's Admins: at most ``calls_max`` lent at once. Any thread."""

    def __init__(self, broker, request_timeout_ms: float,
                 calls_max: int = limits.CONSOLE_BROKER_CALLS_MAX):
        self.broker = broker
        self.request_timeout_ms = request_timeout_ms
        self.calls_max = calls_max
        self._lock = threading.Lock()
        self._idle: list[DeadlineAdmin] = []
        self._in_flight = 0
        self._closed = False

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextlib.contextmanager
    def slot(self, *, background: bool = False):
        """Count one piece of work on the broker in flight for the ``with`` block;
        ConsoleBusyError at once past the bound (half of it for ``background`` work)."""
        bound = self.calls_max // 2 if background else self.calls_max
        with self._lock:
            if self._in_flight >= bound:
                raise ConsoleBusyError(
                    f"the console is waiting for {self._in_flight} earlier requests to the "
                    f"broker at {self.broker.url} (at most {bound} at once); try again in a "
                    f"few seconds")
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    @contextlib.contextmanager
    def admin(self, *, background: bool = False):
        """An Admin of its own for the ``with`` block, counted in flight."""
        with self.slot(background=background):
            with self._lock:
                admin = self._idle.pop() if self._idle else None
            if admin is None:
                admin = DeadlineAdmin(broker=self.broker,
                                      request_timeout_ms=self.request_timeout_ms)
            try:
                yield admin
            finally:
                with self._lock:
                    if not self._closed:
                        self._idle.append(admin)
                        admin = None
                if admin is not None:
                    admin.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for admin in idle:
            admin.close()


class ConsoleAdmin:
    """What pages see as ``ctx.admin``: each Admin method, run on an Admin lent by
    ``calls`` for that one call. Any thread."""

    def __init__(self, calls: BrokerCalls, *, background: bool = False):
        self._calls = calls
        self._background = background

    def background(self) -> "ConsoleAdmin":
        """The same, for the samplers: held to half the calls in flight."""
        return ConsoleAdmin(self._calls, background=True)

    def __getattr__(self, name: str):
        if name.startswith("_") or not callable(getattr(DeadlineAdmin, name, None)):
            raise AttributeError(name)

        def call(*args, **kwargs):
            with self._calls.admin(background=self._background) as admin:
                return getattr(admin, name)(*args, **kwargs)

        call.__name__ = name
        return call

    def close(self) -> None:
        self._calls.close()
