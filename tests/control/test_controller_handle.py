"""ControllerHandle (control/controller_handle.py) on a real Ray: a call whose caller gave
up leaves no error unread behind it. Ray prints an error no one read ("Unhandled error",
with the controller's traceback) on the stdout of the process that made the call, the
server's: a query held up by a stopped shard until after its router gave up printed one
a minute later, as if the server had failed. The controller is a stand-in actor whose
call ends, with an error, only once the test lets it. Uses the session's Ray
(tests/conftest.py)."""

from __future__ import annotations

import logging
import threading

import pytest
import ray
import ray._private.worker

from plinth.control.controller_handle import ControllerHandle
from plinth.errors import RequestTimedOutError, UnavailableError
from tests.support import wait_until

LATE_WAIT_S = 30


@ray.remote(max_concurrency=2)
class LateController:
    """Answers ``held`` only after ``release``, with UnavailableError."""

    def __init__(self):
        self._released = threading.Event()

    def held(self) -> None:
        self._released.wait(LATE_WAIT_S)
        raise UnavailableError("shard-1 did not answer group_names_page")

    def release(self) -> None:
        self._released.set()


def test_a_call_that_fails_after_its_caller_gave_up_is_logged_not_left_unhandled(
        ray_cluster, monkeypatch, caplog):
    # Given a controller whose call fails only after its caller's timeout, and Ray's
    # report of errors no one read watched
    unhandled: list[Exception] = []
    monkeypatch.setattr(ray._private.worker, "_unhandled_error_handler", unhandled.append)
    caplog.set_level(logging.INFO, logger="plinth.control.controller_handle")
    actor = LateController.remote()
    handle = ControllerHandle(actor)
    # When the caller gives up on it
    with pytest.raises(RequestTimedOutError, match="did not answer list_groups_page"):
        handle._call(lambda a: a.held.remote(), "list_groups_page", timeout_s=0.5)
    # And the call then fails
    ray.get(actor.release.remote())

    def late_outcome_seen() -> bool:
        return bool(unhandled) or "ended after its caller stopped waiting" in caplog.text

    wait_until(late_outcome_seen, timeout_s=LATE_WAIT_S)
    # Then its error is logged as late, naming the call and the error, and Ray has no
    # unread error to print
    assert unhandled == []
    assert ("the controller's list_groups_page ended after its caller stopped waiting: "
            "UnavailableError: shard-1 did not answer group_names_page") in caplog.text
    ray.kill(actor)


@ray.remote
class OlderController:
    """A controller of a build before 0.2.0: no build_version call."""

    def security_required(self) -> tuple[str, ...]:
        return ()


def test_a_controller_of_a_build_before_0_2_0_has_no_build_version_and_says_none(ray_cluster):
    assert ControllerHandle(OlderController.remote()).build_version() is None
