"""ConfirmTokens: what binds a console change's "apply" request to the plan its
confirmation page showed.

Every change in the console is two requests: a confirmation (a dry run) that
shows exactly what will be done and carries a token, and an apply that posts the
plan back with that token. The apply recomputes the plan from what it is posted
and applies it only if the token was made for that very plan, by this console
process, for this user, and has not expired. So a changed field (7 partitions
where 2 were confirmed, another config, another offset, a partition added or
named twice), a token shown to someone else, or a page left open too long is
refused (StaleConfirmationError, a 400 page saying to confirm again), and
nothing is applied.

A token is ``EXPIRY.MAC``:

    EXPIRY  the Unix time, whole seconds, after which it is refused: when it was
            made + limits.CONSOLE_CONFIRM_TOKEN_S
    MAC     64 hex digits: HMAC-SHA256, under a 32-byte key drawn at random when
            the console starts (held in memory only, never logged or written),
            of the canonical JSON (sorted keys, no spaces, ASCII) of
            [action, resource, plan, user, EXPIRY]

- action: "create-topic", "alter-topic", "delete-topic", "reset-offsets" or
  "delete-group";
- resource: the topic's or group's name;
- plan: the change in a canonical form the page builds the same way for the
  confirmation and the apply (pages_topics.py, pages_groups.py): sorted lists of
  config entries, the partition count, a reset's sorted (topic, partition,
  offset) triples; a topic delete's, the id of the topic its page showed (so a
  topic deleted and created again under the name since is refused by the broker,
  UnknownTopicIdError, not deleted); None when the name is the whole plan (a
  group's delete);
- user: who is logged in (auth.py sets it); "" for a console on loopback,
  which has no login.

A restart draws a new key, so tokens of the last process are refused. Any thread
may make and check tokens: the key never changes, and ``clock`` is only read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Callable

from plinth import limits
from plinth.errors import StaleConfirmationError

ACTIONS = ("create-topic", "alter-topic", "delete-topic", "reset-offsets", "delete-group")


class ConfirmTokens:
    """Makes and checks one console process's confirmation tokens (see the top).
    ``clock`` gives Unix seconds; tests pass one they move."""

    def __init__(self, *, lifetime_s: int = limits.CONSOLE_CONFIRM_TOKEN_S,
                 clock: Callable[[], float] = time.time):
        self.lifetime_s = lifetime_s
        self.clock = clock
        self._key = secrets.token_bytes(32)

    def __repr__(self) -> str:   # never the key: a repr may end up in a log
        return f"ConfirmTokens(lifetime_s={self.lifetime_s})"

    def make(self, action: str, resource: str, plan, user: str = "") -> str:
        """The token an apply of ``plan`` (``action`` on ``resource``, by ``user``)
        must carry, valid for ``lifetime_s`` from now."""
        expiry = int(self.clock()) + self.lifetime_s
        return f"{expiry}.{self._mac(action, resource, plan, user, expiry)}"

    def check(self, action: str, resource: str, plan, user: str, token: str | None) -> None:
        """Return if ``token`` was made for exactly these and has not expired; else
        StaleConfirmationError saying which, and to confirm again."""
        expiry_text, dot, mac = (token or "").strip().partition(".")
        if not (dot and expiry_text.isdigit() and len(expiry_text) <= 12):
            raise StaleConfirmationError(
                f"this form carries no valid confirmation token: {_AGAIN}")
        expiry = int(expiry_text)
        if not hmac.compare_digest(self._mac(action, resource, plan, user, expiry), mac):
            raise StaleConfirmationError(
                f"the {action} of {resource!r} posted is not the plan that was confirmed "
                f"(the plan changed, or the confirmation was made for another user or "
                f"by a console process that has restarted since): {_AGAIN}")
        now = int(self.clock())
        if now > expiry:
            raise StaleConfirmationError(
                f"the confirmation of this {action} of {resource!r} expired {now - expiry} s "
                f"ago (a confirmation is good for {self.lifetime_s} s): {_AGAIN}")

    def _mac(self, action: str, resource: str, plan, user: str, expiry: int) -> str:
        assert action in ACTIONS, action
        message = json.dumps([action, resource, plan, user, expiry], sort_keys=True,
                             separators=(",", ":"), ensure_ascii=True)
        return hmac.new(self._key, message.encode("ascii"), hashlib.sha256).hexdigest()


_AGAIN = "nothing was changed; go back to the console's page and confirm again"


def user_of(request) -> str:
    """Who sent ``request``: the name it logged in as (auth.py), "" without a login."""
    return getattr(request.state, "user", "") or ""
