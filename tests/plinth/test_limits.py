"""limits.py: the relations between limits hold, and a bad edit is named at import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from plinth import limits


def test_every_relation_between_the_limits_holds():
    assert [what for what, holds in limits._relations() if not holds] == []


def test_a_broken_relation_is_named(monkeypatch):
    # Given a batch limit edited to be larger than a frame
    monkeypatch.setattr(limits, "BATCH_BYTES_MAX", limits.FRAME_BYTES_MAX + 1)
    # When the relations are checked, then the error names what broke
    with pytest.raises(AssertionError, match="a batch fits a frame"):
        limits.check_relations()


def test_the_check_runs_under_python_dash_o_too():
    # Given a child interpreter with asserts stripped, and a broken limit
    code = ("import plinth.limits as l; l.FETCH_WAIT_MS_DEFAULT = l.FETCH_WAIT_MS_MAX + 1; "
            "l.check_relations()")
    done = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True)
    # Then the check still fails, naming the relation
    assert done.returncode != 0 and "the default fetch wait is allowed" in done.stderr


def test_one_address_allowed_a_third_of_the_login_pool_is_named(monkeypatch):
    # Given a per-address limit edited so that three addresses more than fill the pool
    monkeypatch.setattr(limits, "KAFKA_CONNECTIONS_BEFORE_LOGIN_PER_ADDRESS_MAX",
                        limits.KAFKA_CONNECTIONS_BEFORE_LOGIN_MAX // 3 + 1)
    # When the relations are checked, Then the error names the pool for logins
    with pytest.raises(AssertionError, match="no one address, nor two, can fill the pool"):
        limits.check_relations()
