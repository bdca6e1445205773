"""SASL PLAIN, the server's side (RFC 4616), checked against salted credentials.

Runs on the Kafka listener's event loop thread (api_sasl.py). One message,
one answer:

    [authzid] NUL authcid NUL passwd        UTF-8; authzid empty or the authcid

The password is checked by deriving the user's stored SCRAM key from it
(sasl_users.py: PBKDF2 with the user's salt and iterations, then a
constant-time compare), so the users file holds no password. PLAIN sends the
password itself: the listener requires TLS for it on any non-loopback address
(service.py). An unknown user costs the same derivation as a known one, so
the time taken does not tell which users exist.
"""

from __future__ import annotations

from plinth.errors import SaslAuthenticationError
from plinth.router.kafka.sasl_scram import unknown_user_credential
from plinth.router.kafka.sasl_users import ScramCredential

MECHANISM = "PLAIN"


def authenticate_plain(users: dict[str, ScramCredential], message: bytes) -> str:
    """The user ``message`` logs in as; SaslAuthenticationError (naming the user, never
    the password) unless its password is that user's."""
    try:
        authzid, user, password = bytes(message).decode().split("\0")
    except (UnicodeDecodeError, ValueError):
        raise SaslAuthenticationError("PLAIN: the message is not authzid NUL user NUL "
                                      "password in UTF-8") from None
    if authzid and authzid != user:
        raise SaslAuthenticationError(f"PLAIN: user {user!r} may not act as {authzid!r}")
    credential = users.get(user)
    if not (credential or unknown_user_credential(user)).matches_password(password) \
            or credential is None:
        raise SaslAuthenticationError(f"PLAIN: user {user!r}: unknown user or wrong password")
    return user
