"""The Kafka listener's SASL users file: who may log in, as salted SCRAM-SHA-256 credentials.

Any thread may load the file or check a password against it. ``plinth serve
--kafka-sasl-users FILE`` (and ``plinth router``) names it; ``plinth kafka-user
add FILE NAME`` writes an entry from a password read on stdin or at a prompt.
The file never holds a password. It is one JSON object mapping a user name to
its SCRAM-SHA-256 credentials (RFC 5802 section 3, SHA-256 as RFC 7677 has it):

    {
      "alice": {
        "mechanism": "SCRAM-SHA-256",
        "iterations": 8192,                   PBKDF2 rounds, 4096..16384
        "salt": "<base64, 16 bytes>",
        "stored_key": "<base64, 32 bytes>",   H(HMAC(SaltedPassword, "Client Key"))
        "server_key": "<base64, 32 bytes>"    HMAC(SaltedPassword, "Server Key")
      }
    }

where SaltedPassword = PBKDF2-HMAC-SHA-256(UTF-8 password, salt, iterations)
(Kafka's ScramFormatter: no SASLprep). Both mechanisms check against it:
SCRAM-SHA-256 as RFC 5802 says (sasl_scram.py: the password never crosses
the wire), PLAIN (sasl_plain.py, over TLS) by deriving the stored key from
the password it receives with the user's salt and iterations and comparing
in constant time. So every user may log in either way, and a stolen file
gives no password: only what a dictionary attack on each salt yields.

A user is named in the ACL file (router/acl.py) as ``"User:<name>"``.

Loading is strict, as the ACL's: a duplicate user, an unknown field, a name
that is empty, over KAFKA_SASL_USER_NAME_BYTES_MAX bytes or holds a control
character, iterations outside KAFKA_SCRAM_ITERATIONS_MIN..MAX, a key that is
not 32 bytes of base64 or more than KAFKA_SASL_USERS_MAX users is an
InvalidConfigError naming the file, the user and the field.

Reloading. SIGHUP reads the file again (service.py's ``reload_users``); what
changed is counted by ``users_changed``: a user whose credentials differ (a new
password, or the same one added again, which draws a new salt) counts as
changed, and its connections logged in before must log in again (gateway.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from plinth import limits
from plinth.durable_files import refuse_duplicate_keys
from plinth.errors import InvalidConfigError

PRINCIPAL_PREFIX = "User:"   # a Kafka SASL user, as Kafka's ACLs name principals

MECHANISM = "SCRAM-SHA-256"
FIELDS = ("mechanism", "iterations", "salt", "stored_key", "server_key")
_KEY_BYTES = 32      # SHA-256


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """One user's salted credentials. Immutable: any thread."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def matches_password(self, password: str) -> bool:
        """Whether ``password`` derives this credential's stored key (constant time)."""
        client_key = hmac.digest(salted_password(password, self.salt, self.iterations),
                                 b"Client Key", "sha256")
        return hmac.compare_digest(hashlib.sha256(client_key).digest(), self.stored_key)


@dataclass(frozen=True, slots=True)
class UsersChange:
    """What a reload of the users file changed: how many users were added, removed,
    and kept with other credentials. Immutable: any thread."""

    added: int
    removed: int
    changed: int

    @property
    def cut_off(self) -> int:
        """The users whose connections logged in before must log in again."""
        return self.removed + self.changed


def users_changed(old: dict[str, ScramCredential],
                  new: dict[str, ScramCredential]) -> UsersChange:
    """What replacing ``old`` by ``new`` changes (set and dict look-ups: no PBKDF2)."""
    kept = old.keys() & new.keys()
    return UsersChange(added=len(new.keys() - kept), removed=len(old.keys() - kept),
                       changed=sum(old[name] != new[name] for name in kept))


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """RFC 5802's SaltedPassword: Hi(password, salt, i), i.e. PBKDF2-HMAC-SHA-256."""
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


def credential_for(password: str, iterations: int = limits.KAFKA_SCRAM_ITERATIONS_DEFAULT,
                   salt: bytes | None = None) -> ScramCredential:
    """Fresh credentials for ``password`` (a random salt unless one is given)."""
    salt = secrets.token_bytes(limits.KAFKA_SCRAM_SALT_BYTES) if salt is None else salt
    salted = salted_password(password, salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    return ScramCredential(salt, iterations, hashlib.sha256(client_key).digest(),
                           hmac.digest(salted, b"Server Key", "sha256"))


def check_user_name(name: str, where: str) -> str:
    """``name`` if it may name a user; InvalidConfigError saying why not."""
    size = len(name.encode())
    if not 0 < size <= limits.KAFKA_SASL_USER_NAME_BYTES_MAX:
        raise InvalidConfigError(f"{where}: user name {name!r} is {size} bytes; it must be 1 "
                                 f"to {limits.KAFKA_SASL_USER_NAME_BYTES_MAX}")
    if not name.isprintable():
        raise InvalidConfigError(f"{where}: user name {name!r} holds a control character")
    if name == "*":
        # Kafka's User:* means every user; Plinth's ACL file says that with "*" alone, so
        # a user of that name would be a different grant that looks the same.
        raise InvalidConfigError(f"{where}: '*' is not a user name; in the ACL file, the "
                                 f"key \"*\" (without User:) grants every client")
    return name


def load_users(path: Path) -> dict[str, ScramCredential]:
    """Read and check the users file; InvalidConfigError names what is wrong and where."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(), object_pairs_hook=refuse_duplicate_keys)
    except (OSError, ValueError) as exc:
        raise InvalidConfigError(f"cannot read SASL users file {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidConfigError(f"SASL users file {path}: expected an object of user name "
                                 f"-> credentials")
    if len(raw) > limits.KAFKA_SASL_USERS_MAX:
        raise InvalidConfigError(f"SASL users file {path}: {len(raw)} users, the limit is "
                                 f"{limits.KAFKA_SASL_USERS_MAX}")
    return {check_user_name(name, f"SASL users file {path}"): _credential(path, name, value)
            for name, value in raw.items()}


def add_user(path: Path, name: str, password: str,
             iterations: int = limits.KAFKA_SCRAM_ITERATIONS_DEFAULT) -> None:
    """Add or replace ``name`` in the users file (created, mode 0600, if absent).
    Written to a temporary file and renamed, so a reader never sees half a file."""
    path = Path(path)
    check_user_name(name, f"SASL users file {path}")
    if name.startswith(PRINCIPAL_PREFIX):
        # Kafka's tools name principals "User:alice"; the user is "alice". A user named
        # "User:alice" would be the ACL's User:User:alice, a grant nobody would write.
        raise InvalidConfigError(
            f"SASL users file {path}: user {name!r} starts with {PRINCIPAL_PREFIX!r}, "
            f"the ACL's prefix for a user, not part of its name: add "
            f"{name[len(PRINCIPAL_PREFIX):]!r}, and grant it as {name} in the ACL")
    if not path.parent.is_dir():   # else the .partial file's open names only itself
        raise InvalidConfigError(f"SASL users file {path}: its directory {path.parent} does "
                                 f"not exist; create it first")
    if not password:
        raise InvalidConfigError(f"SASL users file {path}: user {name!r}: the password is empty")
    _check_iterations(path, name, iterations)
    users = load_users(path) if path.exists() else {}
    users[name] = credential_for(password, iterations)
    text = json.dumps({user: _as_json(cred) for user, cred in sorted(users.items())}, indent=2)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
    os.replace(partial, path)


def _as_json(cred: ScramCredential) -> dict:
    b64 = lambda data: base64.b64encode(data).decode()   # noqa: E731
    return {"mechanism": MECHANISM, "iterations": cred.iterations, "salt": b64(cred.salt),
            "stored_key": b64(cred.stored_key), "server_key": b64(cred.server_key)}


def _credential(path: Path, name: str, raw) -> ScramCredential:
    where = f"SASL users file {path}: user {name!r}"
    if not isinstance(raw, dict):
        raise InvalidConfigError(f"{where}: expected an object with {', '.join(FIELDS)}")
    unknown = sorted(set(raw) - set(FIELDS))
    missing = [field for field in FIELDS if field not in raw]
    if unknown or missing:
        raise InvalidConfigError(f"{where}: unknown fields {unknown}, missing fields {missing} "
                                 f"(it needs exactly {', '.join(FIELDS)})")
    if raw["mechanism"] != MECHANISM:
        raise InvalidConfigError(f"{where}: field 'mechanism' is {raw['mechanism']!r}; only "
                                 f"{MECHANISM!r} is stored (PLAIN logins check against it)")
    _check_iterations(path, name, raw["iterations"])
    return ScramCredential(_bytes(where, "salt", raw["salt"], None), raw["iterations"],
                           _bytes(where, "stored_key", raw["stored_key"], _KEY_BYTES),
                           _bytes(where, "server_key", raw["server_key"], _KEY_BYTES))


def _check_iterations(path: Path, name: str, iterations) -> None:
    if type(iterations) is not int or not (
            limits.KAFKA_SCRAM_ITERATIONS_MIN <= iterations <= limits.KAFKA_SCRAM_ITERATIONS_MAX):
        raise InvalidConfigError(
            f"SASL users file {path}: user {name!r}: field 'iterations' is {iterations!r}; it "
            f"must be an integer in {limits.KAFKA_SCRAM_ITERATIONS_MIN}.."
            f"{limits.KAFKA_SCRAM_ITERATIONS_MAX}")


def _bytes(where: str, field: str, raw, size: int | None) -> bytes:
    try:
        data = base64.b64decode(raw, validate=True) if isinstance(raw, str) else None
    except binascii.Error:
        data = None
    if not data or (size is not None and len(data) != size):
        wanted = f"{size} bytes" if size is not None else "at least one byte"
        raise InvalidConfigError(f"{where}: field {field!r} must be base64 of {wanted}, "
                                 f"got {raw!r}")
    return data
