"""ConsoleConfig: where the console listens, which broker it reads, and how it
lets people in.

Built by ``plinth console`` (plinth/cli.py) in the console's process. A console
bound to a loopback address needs no login (only this machine's users reach
it). Bound beyond loopback it refuses to start unless it has both an auth file
(auth.py) and a TLS certificate and key: a password sent in the clear is not a
login. Its TLS key and auth file must be private to their owner, as the Kafka
listener's key and users file are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plinth import limits
from plinth.errors import InvalidConfigError
from plinth.loopback import is_loopback
from plinth.secret_files import check_given_secret


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as (host, port); InvalidConfigError naming the text otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidConfigError(f"listen address {text!r} is not HOST:PORT with a port "
                                 f"in 1..65535")
    return host.strip("[]") if host.startswith("[") else host, int(port)


@dataclass
class ConsoleConfig:
    broker: str = limits.BROKER_URL_DEFAULT
    listen: str = limits.CONSOLE_LISTEN_DEFAULT
    auth_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    curve_key_file: str | None = None          # the console's own .key_secret
    curve_server_key_file: str | None = None   # the broker's .key
    request_timeout_ms: int = limits.CLIENT_REQUEST_TIMEOUT_MS_DEFAULT
    sample_interval_s: float = limits.CONSOLE_SAMPLE_INTERVAL_S

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/"

    def check(self) -> None:
        """InvalidConfigError for a console that would serve strangers without a
        login over TLS, half a TLS or CurveZMQ setup, or a TLS key or auth file that
        other users may read or change. The console's process, before it serves."""
        parse_listen(self.listen)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidConfigError("--tls-cert and --tls-key go together")
        if (self.curve_key_file is None) != (self.curve_server_key_file is None):
            raise InvalidConfigError("--curve-key-file and --curve-server-key-file go together")
        if not self.loopback:
            self._check_login_and_tls()
        self._check_secret_files()

    def _check_login_and_tls(self) -> None:
        """InvalidConfigError for a console beyond loopback without both."""
        missing = [name for name, value in (("--auth-file", self.auth_file),
                                            ("--tls-cert/--tls-key", self.tls_cert))
                   if value is None]
        if missing:
            raise InvalidConfigError(
                f"refusing to serve the console on {self.listen} without {' and '.join(missing)}: "
                f"anyone who can reach it could read every topic and delete them. Bind it to "
                f"127.0.0.1, or give it an auth file and a TLS certificate")

    def _check_secret_files(self) -> None:
        """InvalidConfigError for a TLS key or an auth file that other users may read or
        change, as the Kafka listener refuses its own (plinth/secret_files.py): the key
        lets its reader pose as the console, the auth file's hashes can be attacked
        offline, and whoever may write it lets themselves in."""
        if self.tls_key is not None:
            check_given_secret(self.tls_key, "the console's TLS key (--tls-key)")
        if self.auth_file is not None:
            check_given_secret(self.auth_file, "the console's auth file (--auth-file)")
