"""SaslHandshake and SaslAuthenticate: a Kafka client's login (SASL PLAIN or SCRAM-SHA-256).

Runs on the Kafka listener's event loop thread (gateway.py), only when the
listener has a users file (service.py). A login is a SaslHandshake naming
the mechanism, then SaslAuthenticate requests carrying the mechanism's
messages (Kafka's KIP-152 framing): one for PLAIN (sasl_plain.py), two for
SCRAM-SHA-256 (sasl_scram.py). Its progress lives in the connection's
``state``:

    "sasl_mechanism"   the mechanism the handshake chose
    "sasl_exchange"    SCRAM's ScramExchange, between its two rounds
    "sasl_user"        the user the login names, once read (None if the
                       message named none): what its log lines are keyed by
    "sasl_checking"    True while a PLAIN password is being checked: its
                       PBKDF2 runs in one of KAFKA_SASL_PLAIN_CHECK_THREADS
                       threads, off the event loop (hashlib releases the
                       GIL), and a second SaslAuthenticate meanwhile is
                       ILLEGAL_SASL_STATE, so one connection queues one check
    "principal"        the user, once logged in (the gateway then serves it,
                       and backend.py acts for it)
    "sasl_credential"  that user's credential the login was checked against,
                       from the users in force when it began: each later
                       request must still find it there (gateway.py), so a
                       reload that removed the user or changed its password
                       closes the connection at its next request
    "sasl_failed"      True after a failed login: the gateway closes the
                       connection at its next request, as Kafka closes it

PLAIN sends the password as it is, so it is offered only where the listener
allows it (``gateway.sasl_plain_allowed``: TLS, or a loopback address;
service.py): elsewhere a SaslHandshake for PLAIN is answered
UNSUPPORTED_SASL_MECHANISM with SCRAM-SHA-256 as the one mechanism, before
the client has sent its password, as Kafka answers a mechanism it has not
enabled (the handshake has no message field: the log line says why).

A failed login is answered SASL_AUTHENTICATION_FAILED with a message naming
the mechanism and the user, ``gateway.failed_login_delay_s`` after it failed
(KAFKA_FAILED_AUTHENTICATION_DELAY_MS, Kafka's
connection.failed.authentication.delay.ms), so that guessing passwords one
connection after another is slowed; the wait is an asyncio timer, holding
neither a thread nor another connection, and the connections waiting it are
bounded by the listener's pool of those not logged in. It is logged with the
user and the peer, never the password. Anyone can cause these lines, so they go through the gateway's
``sasl_log`` (plinth/log_limit.py): one per user and mechanism per
UNAUTHENTICATED_LOG_INTERVAL_S, and one per refused mechanism and version of
SaslHandshake, the next saying how many were dropped; and, since the user is
whatever the client sends, at most UNAUTHENTICATED_LOG_LINES_MAX lines in all
per interval, then a summary of how many were dropped. SaslHandshake v0 (whose tokens follow without Kafka framing) is
answered UNSUPPORTED_VERSION: the clients Plinth is tested with use v1.
Re-authentication (KIP-368) is not offered: session_lifetime_ms is 0. Instead,
a reload of the users file (SIGHUP, service.py) that removes a user or changes
its password closes that user's connections at their next request (gateway.py),
and their clients' next login meets the new file.

Which users. ``gateway.sasl_users`` is replaced whole by a reload on the main
thread; a login reads it once, when it begins, and checks against that
snapshot to its end (a SCRAM exchange's two rounds, a PLAIN check in its
thread), recording the credential it used: a reload in between never mixes
two files in one login, and the gateway's check of the next request sees
whether that credential is still in force.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from plinth import limits
from plinth.errors import SaslAuthenticationError
from plinth.log_limit import LogLimit
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.codec import API_KEYS
from plinth.router.kafka.sasl_plain import MECHANISM as PLAIN, authenticate_plain
from plinth.router.kafka.sasl_scram import MECHANISM as SCRAM_SHA_256, ScramExchange
from plinth.router.kafka.sasl_users import ScramCredential

log = logging.getLogger(__name__)

MECHANISMS = [PLAIN, SCRAM_SHA_256]
SASL_HANDSHAKE_KEY = API_KEYS["SaslHandshake"]
# How much of a name a client sent (a user, a mechanism) keys its log lines.
_NAME_IN_LOG_KEY_CHARS_MAX = limits.KAFKA_SASL_USER_NAME_BYTES_MAX
_PLAIN_CHECKS = ThreadPoolExecutor(max_workers=limits.KAFKA_SASL_PLAIN_CHECK_THREADS,
                                   thread_name_prefix="kafka-sasl-plain")


def mechanisms_offered(plain_allowed: bool) -> list[str]:
    """The mechanisms a listener offers: PLAIN only where its password cannot be read
    on the way (TLS, or loopback)."""
    return MECHANISMS if plain_allowed else [m for m in MECHANISMS if m != PLAIN]


def refusals_log() -> LogLimit:
    """A listener's limiter of the lines refused and failed logins write."""
    return LogLimit(log)


async def sasl_handshake(gateway, header, body: dict, connection) -> dict:
    """Choose the mechanism of this connection's login."""
    state = connection.state
    mechanism = body["mechanism"]
    offered = mechanisms_offered(gateway.sasl_plain_allowed)
    why = ""
    if header.api_version < 1:
        code = kafka.UNSUPPORTED_VERSION
    elif "principal" in state or "sasl_mechanism" in state:
        code = kafka.ILLEGAL_SASL_STATE
    elif mechanism not in offered:
        code = kafka.UNSUPPORTED_SASL_MECHANISM
        if mechanism in MECHANISMS:
            why = (": PLAIN would send the password in the clear, and this listener has no "
                   "TLS and is not on loopback; log in with SCRAM-SHA-256, or give the "
                   "listener --kafka-tls-cert and --kafka-tls-key")
    else:
        state["sasl_mechanism"] = mechanism
        code = kafka.NONE
    if code != kafka.NONE:
        gateway.sasl_log.warning(
            f"handshake {str(mechanism)[:_NAME_IN_LOG_KEY_CHARS_MAX]!r} "
            f"v{header.api_version} {code}",
            "Kafka connection %d from %s:%s: SaslHandshake v%d for %r refused (error %d)%s",
            connection.connection_id, *connection.peer, header.api_version, mechanism, code,
            why)
    return {"error_code": code, "mechanisms": offered}


async def without_sasl(gateway, header, body: dict, connection) -> dict:
    """SaslHandshake or SaslAuthenticate on a listener without --kafka-sasl-users:
    ILLEGAL_SASL_STATE, as Kafka answers them on a listener without SASL, and a line
    saying so (limited per address). Before session 39 the listener did not list
    them, and kafkajs configured for SASL said only that the broker "does not
    support the requested API version" (tester J)."""
    gateway.sasl_log.warning(
        f"no sasl {connection.peer[0]}",
        "Kafka connection %d from %s:%s asked to log in with SASL, but this listener has "
        "no --kafka-sasl-users: configure the client without SASL (security.protocol "
        "PLAINTEXT or SSL), or give the listener users", connection.connection_id,
        *connection.peer)
    if header.api_key == SASL_HANDSHAKE_KEY:
        return {"error_code": kafka.ILLEGAL_SASL_STATE, "mechanisms": []}
    return {"error_code": kafka.ILLEGAL_SASL_STATE, "auth_bytes": b"",
            "error_message": "this Kafka listener has no SASL (plinth serve without "
                             "--kafka-sasl-users): connect without SASL"}


async def sasl_authenticate(gateway, header, body: dict, connection) -> dict:
    """One round of the login the handshake chose."""
    state = connection.state
    mechanism = state.get("sasl_mechanism")
    if mechanism is None or "principal" in state or state.get("sasl_checking"):
        return _answer(kafka.ILLEGAL_SASL_STATE, "SaslAuthenticate must follow one "
                       "SaslHandshake, once per connection, one round at a time")
    token = body["auth_bytes"] or b""
    try:
        if len(token) > limits.KAFKA_SASL_AUTH_BYTES_MAX:
            raise SaslAuthenticationError(
                f"{mechanism}: a message of {len(token)} bytes, the limit is "
                f"{limits.KAFKA_SASL_AUTH_BYTES_MAX}")
        if mechanism == PLAIN:
            state["sasl_user"] = _plain_user(token)
            users = gateway.sasl_users   # one snapshot for the whole check (see the module)
            user = await _check_plain(users, connection, token)
            _logged_in(connection, user, users[user], PLAIN)
            return _answer(kafka.NONE, None)
        return _answer(kafka.NONE, None, _scram_round(gateway, connection, token))
    except SaslAuthenticationError as exc:
        state["sasl_failed"] = True
        user = str(state.get("sasl_user"))[:_NAME_IN_LOG_KEY_CHARS_MAX]
        gateway.sasl_log.warning(f"login {mechanism} {user!r}",
                                 "Kafka connection %d from %s:%s: SASL login failed: %s",
                                 connection.connection_id, *connection.peer, exc)
        # A timer on the loop: no thread nor other connection waits (see the module)
        await asyncio.sleep(gateway.failed_login_delay_s)
        return _answer(kafka.SASL_AUTHENTICATION_FAILED, f"Authentication failed: {exc}")


async def _check_plain(users, connection, token: bytes) -> str:
    connection.state["sasl_checking"] = True
    try:
        return await asyncio.get_running_loop().run_in_executor(
            _PLAIN_CHECKS, authenticate_plain, users, token)
    finally:
        del connection.state["sasl_checking"]


def _scram_round(gateway, connection, token: bytes) -> bytes:
    state = connection.state
    exchange = state.get("sasl_exchange")
    if exchange is None:
        users = gateway.sasl_users   # one snapshot for both rounds (see the module)
        exchange = state["sasl_exchange"] = ScramExchange(users)
        try:
            return exchange.first(token)
        finally:
            state["sasl_user"] = exchange.user   # None if the message named none
            state["sasl_credential"] = users.get(exchange.user)   # None: fails at final
    del state["sasl_exchange"]
    server_final = exchange.final(token)
    _logged_in(connection, exchange.user, state["sasl_credential"], SCRAM_SHA_256)
    return server_final


def _plain_user(token: bytes) -> str | None:
    """The user a PLAIN message names (authzid NUL user NUL password), to key its log
    lines by; None if it names none."""
    parts = bytes(token).split(b"\0")
    return parts[1].decode(errors="replace") if len(parts) == 3 else None


def _logged_in(connection, user: str, credential: ScramCredential, mechanism: str) -> None:
    connection.state["principal"] = user
    connection.state["sasl_credential"] = credential   # still in force? (gateway.py)
    connection.principal = user           # the listener bounds each user's connections
    connection.request_bytes_max = None   # the listener's bound from now on
    log.info("Kafka connection %d from %s:%s logged in as %r (%s)", connection.connection_id,
             *connection.peer, user, mechanism)


def _answer(code: int, message: str | None, auth_bytes: bytes = b"") -> dict:
    return {"error_code": code, "error_message": message, "auth_bytes": auth_bytes,
            "session_lifetime_ms": 0}
