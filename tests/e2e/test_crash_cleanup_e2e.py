"""kill -9 of an embedded ``plinth serve``: nothing it started outlives it, and a
restart on the same data directory serves every acknowledged record; a SIGTERM
stop leaves nothing behind either. A shard of such a server killed alone is
served again, and the server says so in one line of its own, not in Ray's
paragraph about the OOM killer (plinth/ray_messages.py).

The server runs its own Ray here (no ``--ray-address``), as a user starts it:
joined to the session's Ray, it would start no Ray processes of its own. What
it started is read from /proc before the kill: every descendant of the server
process, by pid and start time (a pid may be reused, not with the same start
time), so a process reparented to init after the kill is still counted.
"""

from __future__ import annotations

import os
import signal
import sys

from plinth import Admin, Producer
from tests.support import free_port, read_all, start_until_ready, unique_topic, wait_until

PLINTH = [sys.executable, "-m", "plinth.cli"]
RECORDS = 200
GONE_WITHIN_S = 10     # issue 11: nothing the server started is alive 10 s after kill -9
STOP_WAIT_S = 120      # a SIGTERM stop flushes every log and stops Ray


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time) of every live process; zombies are dead."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z":
            table[int(entry)] = (int(fields[1]), int(fields[19]))
    return table


def started_by(root_pid: int) -> dict[int, int]:
    """pid -> start time of every live descendant of ``root_pid``."""
    table = process_table()
    found, todo = {}, [root_pid]
    while todo:
        parent = todo.pop()
        for pid, (ppid, start) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def still_running(processes: dict[int, int]) -> dict[int, int]:
    table = process_table()
    return {pid: start for pid, start in processes.items() if table.get(pid, (0, None))[1] == start}


def describe(processes: dict[int, int]) -> str:
    names = []
    for pid in sorted(processes):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                name = f.read(100).split(b"\0")[0].decode(errors="replace")
            names.append(f"{pid} {name}")
        except OSError:
            names.append(f"{pid} (gone)")
    return ", ".join(names)


def kill_leftovers(processes: dict[int, int]) -> None:
    """A failed test must not leave its processes behind for the next one."""
    for pid in still_running(processes):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_embedded(data_dir, url: str, home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(home)   # nothing of Ray's goes to the user's home
    return start_until_ready(PLINTH + ["serve", "--data-dir", str(data_dir), "--listen", url,
                                       "--shards", "1"],
                             "plinth ready: listening", timeout_s=180, env=env)


def test_nothing_an_embedded_server_started_outlives_kill_9_and_a_restart_serves_what_it_acknowledged(
        tmp_path):
    # Given an embedded server with its own Ray that acknowledged some records
    url, data_dir = f"tcp://127.0.0.1:{free_port()}", tmp_path / "data"
    proc, output = start_embedded(data_dir, url, tmp_path / "home")
    topic = unique_topic("reap")
    with Admin(broker=url) as admin:
        admin.create_topic(topic, 1)
    with Producer(broker=url, acks="all") as producer:
        futures = [producer.send(topic, b"%d" % n) for n in range(RECORDS)]
        offsets = [future.get(30).offset for future in futures]
    assert offsets == list(range(RECORDS))
    started = started_by(proc.pid)
    assert "raylet" in describe(started) and "ray::DashboardAgent" in describe(started), \
        describe(started)
    # When the server process alone is SIGKILLed
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    # Then within 10 s no process it started is running
    try:
        wait_until(lambda: not still_running(started), timeout_s=GONE_WITHIN_S, interval_s=0.1)
    except AssertionError:
        left = still_running(started)
        raise AssertionError(f"{len(left)} of the {len(started)} processes the server started "
                             f"are running {GONE_WITHIN_S} s after kill -9: {describe(left)}\n"
                             + "".join(output[-20:])) from None
    finally:
        kill_leftovers(started)
    # When a new server starts on the same data directory
    proc, output = start_embedded(data_dir, url, tmp_path / "home")
    try:
        # Then it serves every record the first one acknowledged, in order
        values = [record.value for record in read_all(url, topic)]
        assert values == [b"%d" % n for n in range(RECORDS)]
    finally:
        started = started_by(proc.pid)
        proc.terminate()
        code = proc.wait(STOP_WAIT_S)
    # And a SIGTERM stop ends it with status 0, and nothing it started is left running
    try:
        assert code == 0, "".join(output[-30:])
        assert not still_running(started), describe(still_running(started))
    finally:
        kill_leftovers(started)


def processes_named(processes: dict[int, int], title: str) -> list[int]:
    """The pids of ``processes`` whose command line starts with ``title`` (Ray names
    its workers' processes after their actor class: ray::ShardActor)."""
    found = []
    for pid in processes:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read(200).startswith(title.encode()):
                    found.append(pid)
        except OSError:
            pass
    return found


def test_a_shard_killed_under_an_embedded_server_is_reported_in_one_line_of_ours_and_serves_again(
        tmp_path):
    # Given an embedded server with one shard, which acknowledged a record
    url, data_dir = f"tcp://127.0.0.1:{free_port()}", tmp_path / "data"
    proc, output = start_embedded(data_dir, url, tmp_path / "home")
    started = started_by(proc.pid)
    try:
        topic = unique_topic("killed")
        with Admin(broker=url) as admin:
            admin.create_topic(topic, 1)
        with Producer(broker=url, acks="all") as producer:
            producer.send(topic, b"before").get(30)
        [shard_pid] = processes_named(started, "ray::ShardActor")
        # When its shard's process alone is SIGKILLed
        os.kill(shard_pid, signal.SIGKILL)
        # Then the server prints one line of its own naming the process and the shard it
        # ran (the controller knows the pid), and none of Ray's
        ours = f"a Ray worker process (pid {shard_pid}, shard-0) ended unexpectedly"
        wait_until(lambda: any(ours in printed for printed in output), timeout_s=60,
                   explain=lambda: "".join(output[-20:]))
        assert not [printed for printed in output if "(raylet)" in printed or
                    "resource isolation" in printed], "".join(output[-20:])
        # And the restarted shard serves the record it acknowledged, and takes new ones
        with Producer(broker=url, acks="all") as producer:
            producer.send(topic, b"after").get(60)
        assert [record.value for record in read_all(url, topic)] == [b"before", b"after"]
    finally:
        started = started_by(proc.pid) | started
        proc.terminate()
        proc.wait(STOP_WAIT_S)
        kill_leftovers(started)
