"""SCRAM-SHA-256, the server's side (RFC 5802, with SHA-256 as RFC 7677 names it).

Runs on the Kafka listener's event loop thread: one ``ScramExchange`` per
connection that chose SCRAM-SHA-256 (api_sasl.py keeps it in the connection's
state). Two rounds, each one SaslAuthenticate request and its answer:

    client-first  gs2-header client-first-bare  "n,," "n=<user>,r=<client nonce>"
    server-first                                "r=<client nonce><server nonce>,
                                                 s=<base64 salt>,i=<iterations>"
    client-final                                "c=<base64 gs2-header>,r=<nonce>,
                                                 p=<base64 ClientProof>"
    server-final                                "v=<base64 ServerSignature>"

AuthMessage = client-first-bare "," server-first "," client-final without its
",p=..." part. The proof is checked as the RFC says: ClientKey = ClientProof
XOR HMAC(StoredKey, AuthMessage), and H(ClientKey) must equal the user's
StoredKey (a constant-time compare). The password never crosses the wire.

Refused, with a SaslAuthenticationError naming the user: channel binding
("p=" in the gs2 header: the TLS channel is not bound), an authzid that is
not the user itself, a mandatory extension ("m="), a nonce or channel-binding
echo that is not the one sent, a wrong proof, and any message that does not
parse. An unknown user gets a server-first like any other (its salt derived
from the name with a per-process secret), so the answer does not tell which
users exist; it fails at the proof, as a wrong password does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from plinth import limits
from plinth.errors import SaslAuthenticationError
from plinth.router.kafka.sasl_users import ScramCredential

MECHANISM = "SCRAM-SHA-256"
_SERVER_NONCE_BYTES = 24
_UNKNOWN_USER_SECRET = secrets.token_bytes(32)   # salts of users that do not exist


def _server_nonce() -> str:
    return secrets.token_urlsafe(_SERVER_NONCE_BYTES)


class ScramExchange:
    """One login. Construct per connection; ``first`` then ``final``, each once, on the
    listener's thread. ``user`` is the name the client gave (after ``first``)."""

    def __init__(self, users: dict[str, ScramCredential], server_nonce=_server_nonce):
        self._users = users
        self._server_nonce = server_nonce
        self.user: str | None = None
        self._credential: ScramCredential | None = None
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""

    def first(self, message: bytes) -> bytes:
        """The server-first message for the client-first ``message``."""
        text = _text(message)
        gs2_header, bare = _split_gs2(text)
        attributes = _attributes(bare)
        if "m" in attributes:
            raise SaslAuthenticationError("SCRAM-SHA-256: a mandatory extension (m=) is not "
                                          "supported")
        if "n" not in attributes or "r" not in attributes:
            raise SaslAuthenticationError(f"SCRAM-SHA-256: client-first {bare!r} lacks n= or r=")
        self.user = _unescape(attributes["n"])
        authzid = gs2_header.split(",")[1]
        if authzid and _unescape(authzid[2:]) != self.user:
            raise SaslAuthenticationError(f"SCRAM-SHA-256: user {self.user!r} may not act as "
                                          f"{authzid[2:]!r}")
        self._credential = self._users.get(self.user) or unknown_user_credential(self.user)
        self._gs2_header, self._client_first_bare = gs2_header, bare
        self._nonce = attributes["r"] + self._server_nonce()
        salt = base64.b64encode(self._credential.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={self._credential.iterations}"
        return self._server_first.encode()

    def final(self, message: bytes) -> bytes:
        """The server-final message for the client-final ``message``; raises
        SaslAuthenticationError unless the proof is right."""
        assert self._credential is not None, "final() before first()"
        text = _text(message)
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            raise SaslAuthenticationError(f"SCRAM-SHA-256: user {self.user!r}: client-final "
                                          f"has no proof")
        attributes = _attributes(without_proof)
        if attributes.get("c") != base64.b64encode(self._gs2_header.encode()).decode():
            raise SaslAuthenticationError(f"SCRAM-SHA-256: user {self.user!r}: the channel "
                                          f"binding echo is not the gs2 header sent")
        # Kafka's rule (ScramSaslServer): the nonce ends with the one the server sent.
        # RFC 5802 wants it equal, but librdkafka 2.0.2 (Debian 12's kcat) sends its
        # own nonce twice ahead of the server's part, and Kafka lets it in (tester J,
        # session 39). The proof covers the nonce as sent (auth_message below).
        if not attributes.get("r", "").endswith(self._nonce):
            raise SaslAuthenticationError(f"SCRAM-SHA-256: user {self.user!r}: the nonce does "
                                          f"not end with the one the server sent")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        if not self._proof_holds(_b64(proof_b64), auth_message):
            raise SaslAuthenticationError(f"SCRAM-SHA-256: user {self.user!r}: wrong password "
                                          f"(the client's proof does not match)")
        signature = hmac.digest(self._credential.server_key, auth_message, "sha256")
        return b"v=" + base64.b64encode(signature)

    @property
    def known_user(self) -> bool:
        return self.user is not None and self.user in self._users

    def _proof_holds(self, proof: bytes, auth_message: bytes) -> bool:
        signature = hmac.digest(self._credential.stored_key, auth_message, "sha256")
        if len(proof) != len(signature) or not self.known_user:
            return False
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        return hmac.compare_digest(hashlib.sha256(client_key).digest(),
                                   self._credential.stored_key)


def unknown_user_credential(user: str) -> ScramCredential:
    """The same salt for the same unknown name within this process, as a real user's."""
    salt = hmac.digest(_UNKNOWN_USER_SECRET, user.encode(), "sha256")[:limits.KAFKA_SCRAM_SALT_BYTES]
    return ScramCredential(salt, limits.KAFKA_SCRAM_ITERATIONS_DEFAULT, bytes(32), bytes(32))


def _text(message: bytes) -> str:
    try:
        return bytes(message).decode()
    except UnicodeDecodeError:
        raise SaslAuthenticationError("SCRAM-SHA-256: a message is not UTF-8") from None


def _split_gs2(text: str) -> tuple[str, str]:
    """("n,," or "y,," or "n,a=<authzid>,", client-first-bare)."""
    parts = text.split(",", 2)
    if len(parts) != 3 or parts[0] not in ("n", "y", "") or (parts[1] and not parts[1].startswith("a=")):
        if parts and parts[0].startswith("p="):
            raise SaslAuthenticationError("SCRAM-SHA-256: channel binding (p=) is not supported")
        raise SaslAuthenticationError(f"SCRAM-SHA-256: client-first {text[:64]!r} has no gs2 "
                                      f"header (n,, or y,,)")
    if parts[0] == "":
        raise SaslAuthenticationError("SCRAM-SHA-256: the gs2 header's flag is empty")
    return f"{parts[0]},{parts[1]},", parts[2]


def _attributes(text: str) -> dict[str, str]:
    """"a=1,b=2" as {"a": "1", "b": "2"}: each attribute is one letter and "="."""
    found = {}
    for item in text.split(","):
        if len(item) < 2 or item[1] != "=" or not item[0].isalpha():
            raise SaslAuthenticationError(f"SCRAM-SHA-256: {item[:32]!r} is not an attribute")
        found.setdefault(item[0], item[2:])
    return found


def _unescape(name: str) -> str:
    """RFC 5802's saslname: "=2C" is ",", "=3D" is "="; any other "=" is malformed."""
    if "=" in name.replace("=2C", "").replace("=3D", ""):
        raise SaslAuthenticationError(f"SCRAM-SHA-256: user name {name[:64]!r} has a bare '='")
    return name.replace("=2C", ",").replace("=3D", "=")


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise SaslAuthenticationError("SCRAM-SHA-256: the proof is not base64") from None
