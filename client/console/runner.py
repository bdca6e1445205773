"""Serving the console: bind, say ready, run uvicorn until told to stop.

Runs in the console's own process, main thread (``plinth console``). It binds
the socket itself before uvicorn starts, so that an address in use is one
clear InvalidConfigError naming the address and the option, and so that the
ready line is printed only once the console accepts connections.

Started by ``plinth serve`` (child.py), it reads its stdin
until end-of-file, which comes when the server's process ends in any way, and
then stops: the console never outlives its broker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading

from plinth import limits
from plinth.client.console.config import ConsoleConfig
from plinth.client.console.cross_site import add_frame_headers
from plinth.loopback import is_loopback
from plinth.errors import InvalidConfigError

log = logging.getLogger(__name__)

READY_PREFIX = "plinth console ready: "


def bind(config: ConsoleConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        sock.close()
        raise InvalidConfigError(f"the console cannot listen on {config.listen}: {exc.strerror} "
                                 f"(choose another address with --listen, or "
                                 f"--console-listen for plinth serve)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run(config: ConsoleConfig, *, exit_on_stdin_eof: bool = False, ready=print) -> int:
    """Serve until SIGTERM or SIGINT (or stdin's end-of-file); returns the exit code."""
    import uvicorn

    from plinth.client.console.app import create_app

    config.check()
    sock = bind(config)
    app = create_app(config)
    if config.loopback:
        app = LoopbackHostOnly(app)
    server = _quiet_server_class()(uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on",
        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
        timeout_graceful_shutdown=limits.CONSOLE_SHUTDOWN_GRACE_S))
    # Before the ready line: whoever reads it may signal at once, and a SIGINT
    # before uvicorn's own start would be a KeyboardInterrupt and exit status 1.
    _stop_on_signals(server)
    if exit_on_stdin_eof:
        threading.Thread(target=_exit_at_end_of_stdin, args=(server,), daemon=True,
                         name="console-parent-watch").start()
    ready(f"{READY_PREFIX}{config.url}")
    server.run(sockets=[sock])
    return 0


class LoopbackHostOnly:
    """ASGI wrapper of a console on loopback, which has no login: it answers only
    requests whose Host header names a loopback address. A web page elsewhere can
    make a visitor's browser reach 127.0.0.1 under a name of its own (DNS
    rebinding), and would then read the console as its own origin; its requests
    carry that name as their Host, and get 421."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not _is_loopback_host(dict(scope["headers"]).get(b"host")):
            await send({"type": "http.response.start", "status": 421,
                        "headers": add_frame_headers(
                            [(b"content-type", b"text/plain; charset=utf-8")])})
            await send({"type": "http.response.body",
                        "body": b"421: this console answers to loopback names only "
                                b"(127.0.0.1, localhost, [::1])\n"})
            return
        await self.app(scope, receive, send)


def _is_loopback_host(header: bytes | None) -> bool:
    if not header:
        return False
    host = header.decode("latin-1").lower()
    if host.startswith("["):
        host = host[:host.find("]") + 1]
    else:
        host = host.rsplit(":", 1)[0]
    return is_loopback(host)


def _quiet_server_class():
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn's server, waking once a second instead of ten times to see whether
        it should exit: an idle console should cost nothing (its Date header is then
        current to the second, which it is anyway). Its signals are run()'s
        (_stop_on_signals), not uvicorn's: uvicorn's own handlers raise the signal
        again once stopped, which makes the exit status -15."""

        @contextlib.contextmanager
        def capture_signals(self):
            yield

        async def main_loop(self) -> None:
            import asyncio

            counter = 0
            while not self.should_exit:
                await asyncio.sleep(1.0)
                counter += 10   # on_tick refreshes the Date header every 10th tick
                if await self.on_tick(counter):
                    return

    return QuietServer


def _stop_on_signals(server) -> None:
    """SIGTERM and SIGINT stop the server, which then exits 0 as plinth's other
    servers do; one that comes before uvicorn started stops it right after its
    start (uvicorn checks should_exit before its main loop)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: setattr(server, "should_exit", True))


def _exit_at_end_of_stdin(server) -> None:
    """Stop the server once stdin ends (its parent died); force the exit if the
    graceful stop takes longer than its grace period."""
    try:
        while os.read(sys.stdin.fileno(), 4096):
            pass
    except OSError:
        pass
    log.info("the server that started this console is gone; stopping")
    server.should_exit = True
    threading.Timer(limits.CONSOLE_SHUTDOWN_GRACE_S + 2, os._exit, args=(0,)).start()
