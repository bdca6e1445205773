"""The console's auth file and the middleware that checks every request against it.

Used in the console's process: the file is read once at start; the middleware
runs on the server's event loop. A console on loopback has no auth file and no
middleware (config.py).

The file is UTF-8 text, one entry a line; blank lines and lines starting with
``#`` are ignored:

    # kind   name    secret
    token    ci      sha256$<64 hex digits: SHA-256 of the token>
    user     alice   scrypt$<n>$<r>$<p>$<salt, hex>$<64-byte key, hex>

- ``token``: a client sends ``Authorization: Bearer <token>``. Tokens are
  random (make one with ``plinth console-auth token NAME``), so a fast hash is
  enough: nobody can guess one from its hash.
- ``user``: HTTP basic auth (a browser's login box). Passwords are chosen by
  people, so their hash is scrypt (hashlib), with its cost in the line
  (limits.CONSOLE_SCRYPT_*); ``plinth console-auth user NAME`` asks for the
  password (or reads it from stdin) and prints the line.

A NAME is 1 to limits.CONSOLE_AUTH_NAME_CHARS_MAX characters without
whitespace (the line's separator) or ``:`` (basic auth's separator).

A bad line, a duplicate name, or more than limits.CONSOLE_AUTH_ENTRIES_MAX
entries is an InvalidConfigError naming the file and the line. A request
without valid credentials gets 401 with ``WWW-Authenticate: Basic``.

A failed login (credentials given, and wrong: not a browser's first request,
which sends none) is logged at WARNING with the client's address and the user
it claimed (never the password or token), at most once per address a minute
and 20 lines a minute in all (log_limit.py; limits.UNAUTHENTICATED_LOG_INTERVAL_S,
CONSOLE_LOGIN_FAILED_LOG_LINES_MAX), and its 401 is sent 100 ms late
(limits.CONSOLE_LOGIN_FAILED_DELAY_MS, Kafka's
connection.failed.authentication.delay.ms) on the event loop's timer, so that a
client guessing in a loop is slowed and nothing else waits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from plinth import limits
from plinth.errors import InvalidConfigError
from plinth.log_limit import LogLimit

log = logging.getLogger(__name__)

KINDS = ("token", "user")


@dataclass(frozen=True)
class Credential:
    kind: str    # "token" or "user"
    name: str
    secret: str  # sha256$HEX or scrypt$N$R$P$SALT$KEY


def validate_name(name: str, where: str = "") -> None:
    """InvalidConfigError unless ``name`` can be a line's NAME (see the top)."""
    if not 0 < len(name) <= limits.CONSOLE_AUTH_NAME_CHARS_MAX:
        raise InvalidConfigError(f"{where}the name {name[:64]!r} has {len(name)} characters; "
                                 f"1 to {limits.CONSOLE_AUTH_NAME_CHARS_MAX} are allowed")
    if ":" in name or any(c.isspace() for c in name):
        raise InvalidConfigError(f"{where}the name {name!r} contains whitespace or ':', "
                                 f"which separate the line's and basic auth's fields")


def token_entry(name: str) -> tuple[str, str]:
    """A new random token and its auth-file line (the token itself is not stored)."""
    validate_name(name)
    token = secrets.token_urlsafe(32)
    return token, f"token {name} {hash_token(token)}"


def user_entry(name: str, password: str) -> str:
    """The auth-file line of a user logging in with ``password`` (scrypt-hashed)."""
    validate_name(name)
    if not password:
        raise InvalidConfigError(f"user {name!r}: the password is empty")
    return f"user {name} {hash_password(password)}"


def hash_token(token: str) -> str:
    return "sha256$" + hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str, *, n: int = limits.CONSOLE_SCRYPT_N,
                  r: int = limits.CONSOLE_SCRYPT_R, p: int = limits.CONSOLE_SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=64)
    return f"scrypt${n}${r}${p}${salt.hex()}${key.hex()}"


def _scrypt_matches(secret: str, password: str) -> bool:
    _, n, r, p, salt, key = secret.split("$")
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                         p=int(p), dklen=len(key) // 2, maxmem=256 * 1024 * 1024)
    return hmac.compare_digest(got.hex(), key)


class AuthFile:
    """The credentials of one auth file. ``check(header)`` may be called from any
    thread; it caches the basic-auth logins it has verified (by a SHA-256 of the
    header), so that a browser's every request does not cost a scrypt."""

    def __init__(self, path: Path, credentials: list[Credential]):
        self.path = path
        self._tokens = {c.secret: c.name for c in credentials if c.kind == "token"}
        self._users = {c.name: c.secret for c in credentials if c.kind == "user"}
        self._verified: set[str] = set()

    @classmethod
    def load(cls, path: Path) -> "AuthFile":
        credentials: list[Credential] = []
        names: set[tuple[str, str]] = set()
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            credential = _parse_line(path, number, line)
            if (credential.kind, credential.name) in names:
                raise InvalidConfigError(f"{path}:{number}: {credential.kind} "
                                         f"{credential.name!r} appears twice")
            names.add((credential.kind, credential.name))
            credentials.append(credential)
            if len(credentials) > limits.CONSOLE_AUTH_ENTRIES_MAX:
                raise InvalidConfigError(f"{path}: more than {limits.CONSOLE_AUTH_ENTRIES_MAX} "
                                         f"entries")
        if not credentials:
            raise InvalidConfigError(f"{path}: no token or user: nobody could log in")
        return cls(Path(path), credentials)

    def check(self, authorization: str | None) -> str | None:
        """The name the ``Authorization`` header logs in as, or None."""
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return self._tokens.get(hash_token(value.strip()))
        if scheme.lower() == "basic":
            return self._check_basic(value.strip())
        return None

    def _check_basic(self, value: str) -> str | None:
        try:
            name, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        secret = self._users.get(name)
        if not sep or secret is None:
            return None
        digest = hashlib.sha256(f"{secret}\0{password}".encode()).hexdigest()
        if digest in self._verified:
            return name
        if not _scrypt_matches(secret, password):
            return None
        if len(self._verified) < limits.CONSOLE_AUTH_ENTRIES_MAX:
            self._verified.add(digest)
        return name


def claimed_login(authorization: str) -> str:
    """What an ``Authorization`` header claims to be, fit for a log line: the basic
    user's name (quoted, cut to a name's length), "a bearer token", or the scheme;
    never a password or a token."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return "a bearer token"
    if scheme.lower() != "basic":
        return f"an Authorization of scheme {scheme[:16]!r}"
    try:
        name, sep, _ = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "a basic login that is not base64 of UTF-8"
    if not sep:
        return "a basic login without ':'"
    return f"user {name[:limits.CONSOLE_AUTH_NAME_CHARS_MAX]!r}"


def _parse_line(path, number: int, line: str) -> Credential:
    parts = line.split()
    if len(parts) != 3 or parts[0] not in KINDS:
        raise InvalidConfigError(f"{path}:{number}: expected 'token NAME sha256$HEX' or "
                                 f"'user NAME scrypt$N$R$P$SALT$KEY'")
    kind, name, secret = parts
    validate_name(name, f"{path}:{number}: ")
    fields = secret.split("$")
    ok = ((kind == "token" and len(fields) == 2 and fields[0] == "sha256" and len(fields[1]) == 64)
          or (kind == "user" and len(fields) == 6 and fields[0] == "scrypt"
              and all(f.isdigit() for f in fields[1:4])))
    if not ok or not all(_is_hex(f) for f in fields[1 if kind == "token" else 4:]):
        raise InvalidConfigError(f"{path}:{number}: the {kind} {name!r} has a malformed hash "
                                 f"(make lines with plinth console-auth)")
    return Credential(kind, name, secret)


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return bool(text)


class AuthMiddleware:
    """Pure ASGI middleware: every HTTP request needs valid credentials, else 401; a
    failed login is logged (bounded) and answered late (see the module). Runs on the
    server's event loop."""

    def __init__(self, app, auth: AuthFile):
        self.app = app
        self.auth = auth
        self._failures_log = LogLimit(log, lines_max=limits.CONSOLE_LOGIN_FAILED_LOG_LINES_MAX)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        header = headers.get(b"authorization", b"").decode("latin-1") or None
        import anyio.to_thread

        who = await anyio.to_thread.run_sync(self.auth.check, header)
        if who is None:
            if header is not None:
                await self._failed(scope, header)
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"www-authenticate", b'Basic realm="plinth console"')]})
            await send({"type": "http.response.body",
                        "body": b"401: log in to the Plinth console (a user of its auth file, "
                                b"or a bearer token)\n"})
            return
        scope.setdefault("state", {})["user"] = who
        return await self.app(scope, receive, send)

    async def _failed(self, scope, header: str) -> None:
        """Log a failed login (at most once per address a minute, and a bound in all),
        then wait out the delay on the event loop before its 401."""
        import anyio

        client = scope.get("client")
        address = client[0] if client else "an unknown address"
        self._failures_log.warning(address, "console login failed from %s: %s does not match %s",
                                   address, claimed_login(header), self.auth.path)
        await anyio.sleep(limits.CONSOLE_LOGIN_FAILED_DELAY_MS / 1000)
