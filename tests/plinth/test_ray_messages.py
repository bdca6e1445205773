"""ray_messages.py: the raylets' messages reach a server's output in Plinth's words.

The message text is Ray's own (ray 2.x, as a server printed it after a shard's
kill -9); the printing function replaced is Ray's real one, called as Ray's error
thread calls it.
"""

from __future__ import annotations

import logging

import pytest
import ray._private.worker as ray_worker

from plinth.ray_messages import RAYLET, route_raylet_messages, worker_death_line

RAY_WORKER_DIED = (
    "A worker died or was killed while executing a task by an unexpected system error. To "
    "troubleshoot the problem, check the logs for the dead worker. Lease ID: 0100000032f0fd66 "
    "Worker ID: 88349d44ef896856 Node ID: 237496fc9ba8f9ea Worker IP address: 127.0.0.1 "
    "Worker port: 34791 Worker PID: 4436 Worker exit type: SYSTEM_ERROR Worker exit detail: "
    "Worker unexpectedly exits with a connection error code 2. End of file. Some common causes "
    "include: (1) the process was killed by the OOM killer due to high memory usage, (2) ray "
    "stop --force was called, or (3) the worker crashed unexpectedly due to SIGSEGV or another "
    "unexpected error. If the process was killed by the kernel OOM killer (verifiable by "
    "checking for OOM in dmesg of the OOMing node), consider enabling resource isolation via "
    "--enable-resource-isolation to prevent node deaths by resource contention.")


@pytest.fixture
def routed(monkeypatch):
    """Ray's printing function routed, and put back after the test; no controller to
    ask whose process died (a Ray the session's other tests started may be connected:
    the default lookup would ask it, and log that nothing answered)."""
    monkeypatch.setattr(ray_worker, "print_to_stdstream", ray_worker.print_to_stdstream)
    route_raylet_messages(owner_of_pid=lambda pid: "")


def raylet_prints(*lines: str) -> None:
    """As Ray's error thread (worker.listen_error_messages) prints a message."""
    ray_worker.print_to_stdstream({"lines": list(lines), "pid": RAYLET, "is_err": False},
                                  ignore_prefix=False)


def test_a_workers_death_is_one_line_with_its_pid_and_exit_type_and_no_resource_advice():
    line = worker_death_line(RAY_WORKER_DIED)
    assert "pid 4436" in line and "SYSTEM_ERROR" in line
    assert "Ray restarts the controller or shard" in line and "plinth status" in line
    assert "resource-isolation" not in line and "\n" not in line


def test_any_other_message_is_not_taken_for_a_death():
    assert worker_death_line("The node with node id abc has been marked dead") is None


def test_a_routed_death_is_logged_as_plinths_warning_and_nothing_of_rays_is_printed(
        routed, capsys, caplog):
    with caplog.at_level(logging.DEBUG, logger="plinth.ray"):
        raylet_prints(RAY_WORKER_DIED)
    assert capsys.readouterr().out == ""
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [worker_death_line(RAY_WORKER_DIED)]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug == [f"ray: {RAY_WORKER_DIED}"]   # Ray's full text, for whoever asks


def test_another_routed_raylet_message_is_logged_with_rays_text(routed, capsys, caplog):
    with caplog.at_level(logging.WARNING, logger="plinth.ray"):
        raylet_prints("The node with node id abc has been marked dead")
    assert capsys.readouterr().out == ""
    assert [r.getMessage() for r in caplog.records] == [
        "ray: The node with node id abc has been marked dead"]


def test_a_workers_own_output_still_goes_to_rays_printer(routed, capsys):
    ray_worker.print_to_stdstream({"lines": ["hello from a worker"], "pid": 1234, "is_err": False,
                                   "ip": "127.0.0.1", "actor_name": "", "task_name": ""},
                                  ignore_prefix=True)
    assert "hello from a worker" in capsys.readouterr().out


def test_a_death_names_the_shard_the_controller_says_ran_in_that_process():
    # Given the controller knows pid 4436 as shard-1's (the server's error thread asks it)
    asked = []

    def owner_of_pid(pid: int) -> str:
        asked.append(pid)
        return "shard-1"
    # When Ray says the worker with that pid died
    line = worker_death_line(RAY_WORKER_DIED, owner_of_pid)
    # Then the line names the shard: the operator need not map the pid himself
    assert asked == [4436]
    assert line.startswith("a Ray worker process (pid 4436, shard-1) ended unexpectedly "
                           "(SYSTEM_ERROR: ")
    assert "Ray restarts shard-1, which reopens its logs" in line
    # And a pid the controller does not know (or no answer) keeps the general words
    unknown = worker_death_line(RAY_WORKER_DIED, lambda pid: "")
    assert unknown == worker_death_line(RAY_WORKER_DIED)
    assert "Ray restarts the controller or shard it hosted" in unknown


def test_without_ray_connected_the_lookup_names_nothing_and_does_not_start_ray(
        monkeypatch, caplog):
    import ray

    from plinth.ray_messages import controller_owner_of_pid
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    assert controller_owner_of_pid(4436) == ""


def test_a_death_says_it_was_killed_by_sigkill_possibly_the_oom_killer():
    line = worker_death_line(RAY_WORKER_DIED, lambda pid: "shard-0")
    assert "(SYSTEM_ERROR: killed (SIGKILL: kill -9, or the kernel's OOM killer) or " \
           "crashed)" in line
    assert "started anew by the controller after a backoff" in line


def test_a_death_by_rays_memory_monitor_says_out_of_memory():
    message = RAY_WORKER_DIED.replace(
        "Worker unexpectedly exits with a connection error code 2.",
        "Task was killed due to the node running low on memory. Ray's memory monitor")
    assert "(SYSTEM_ERROR: killed by Ray's memory monitor: out of memory)" in \
        worker_death_line(message)
