"""Confirmation tokens (client/console/confirm_tokens.py): a token applies only the
plan it was made for, for the user it was made for, in the console process that
made it, until it expires. No broker: the pages that use them are tested in
test_console_pages.py and test_pages_groups.py."""

from __future__ import annotations

import pytest

from plinth import limits
from plinth.client.console.confirm_tokens import ConfirmTokens
from plinth.errors import StaleConfirmationError

NOW_S = 1_800_000_000.0
CREATE = {"partitions": 2, "replication_factor": None, "config": [("retention.ms", "60000")]}
RESET = [("orders", 0, 5), ("orders", 1, 7)]


class Clock:
    """A clock the test moves: no sleeping through a token's lifetime."""

    def __init__(self, now_s: float = NOW_S):
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tokens(clock) -> ConfirmTokens:
    return ConfirmTokens(clock=clock)


def test_a_token_applies_the_plan_it_was_made_for(tokens):
    token = tokens.make("create-topic", "orders", CREATE, "alice")
    tokens.check("create-topic", "orders", CREATE, "alice", token)
    # Built again from the posted form, the plan is equal, not the same object
    tokens.check("create-topic", "orders", {**CREATE, "config": [["retention.ms", "60000"]]},
                 "alice", token)
    tokens.check("reset-offsets", "g", RESET, "", tokens.make("reset-offsets", "g", RESET, ""))


@pytest.mark.parametrize("action, resource, plan, user", [
    pytest.param("create-topic", "orders", {**CREATE, "partitions": 7}, "alice", id="partitions"),
    pytest.param("create-topic", "orders", {**CREATE, "config": [("retention.ms", "1")]},
                 "alice", id="config-value"),
    pytest.param("create-topic", "orders",
                 {**CREATE, "config": [("retention.ms", "60000"), ("segment.ms", "1")]},
                 "alice", id="config-key-added"),
    pytest.param("create-topic", "payments", CREATE, "alice", id="another-topic"),
    pytest.param("alter-topic", "orders", CREATE, "alice", id="another-action"),
    pytest.param("create-topic", "orders", CREATE, "bob", id="another-user"),
    pytest.param("create-topic", "orders", CREATE, "", id="no-user"),
])
def test_a_token_made_for_one_plan_does_not_apply_another(tokens, action, resource, plan, user):
    token = tokens.make("create-topic", "orders", CREATE, "alice")
    with pytest.raises(StaleConfirmationError, match="not the plan that was confirmed"):
        tokens.check(action, resource, plan, user, token)


@pytest.mark.parametrize("plan", [
    pytest.param([("orders", 0, 5), ("orders", 1, 8)], id="another-offset"),
    pytest.param([("orders", 0, 5)], id="a-partition-left-out"),
    pytest.param([*RESET, ("orders", 2, 0)], id="a-partition-added"),
    pytest.param([*RESET, ("payments", 0, 0)], id="a-topic-added"),
])
def test_a_reset_token_applies_no_other_offsets(tokens, plan):
    token = tokens.make("reset-offsets", "g", RESET, "")
    with pytest.raises(StaleConfirmationError, match="not the plan that was confirmed"):
        tokens.check("reset-offsets", "g", plan, "", token)


def test_a_token_expires_after_its_lifetime(tokens, clock):
    token = tokens.make("delete-topic", "orders", None, "")
    clock.now_s += limits.CONSOLE_CONFIRM_TOKEN_S
    tokens.check("delete-topic", "orders", None, "", token)   # the last second
    clock.now_s += 1
    with pytest.raises(StaleConfirmationError, match=f"expired 1 s ago .* good for "
                                                     f"{limits.CONSOLE_CONFIRM_TOKEN_S} s"):
        tokens.check("delete-topic", "orders", None, "", token)


def test_a_token_whose_expiry_was_moved_is_refused(tokens, clock):
    expiry, mac = tokens.make("delete-topic", "orders", None, "").split(".")
    clock.now_s += limits.CONSOLE_CONFIRM_TOKEN_S + 1
    with pytest.raises(StaleConfirmationError, match="not the plan that was confirmed"):
        tokens.check("delete-topic", "orders", None, "", f"{int(expiry) + 3600}.{mac}")


def test_a_token_of_another_console_process_is_refused(tokens, clock):
    token = tokens.make("delete-topic", "orders", None, "")
    with pytest.raises(StaleConfirmationError, match="not the plan that was confirmed"):
        ConfirmTokens(clock=clock).check("delete-topic", "orders", None, "", token)


@pytest.mark.parametrize("token", [None, "", "0" * 64, "x.y", f"{'9' * 13}.{'0' * 64}"])
def test_a_missing_or_malformed_token_is_refused(tokens, token):
    with pytest.raises(StaleConfirmationError, match="no valid confirmation token"):
        tokens.check("delete-topic", "orders", None, "", token)


def test_the_key_shows_in_neither_the_token_nor_the_repr(tokens):
    key = tokens._key
    token = tokens.make("delete-topic", "orders", None, "")
    assert key.hex() not in token and key.hex() not in repr(tokens)
    assert repr(key) not in repr(tokens)
