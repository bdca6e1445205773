"""loadtest/idle_broker.py against a real embedded ``plinth serve``: the broker starts none
of the Ray services Plinth does not use (its actors' log lines go to files instead of
through Ray's log monitor), and the command counts the whole process tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from loadtest import idle_broker
from loadtest.fresh_broker import fresh_broker
from tests.support import wait_until

# The plinth command of the Python running the tests.
PLINTH = shutil.which("plinth", path=str(Path(sys.executable).parent)) or "plinth"


def test_an_idle_embedded_broker_runs_no_dashboard_no_autoscaler_and_no_log_monitor():
    # Given a fresh embedded broker (its own Ray)
    with tempfile.TemporaryDirectory(prefix="plinth-idle-test-") as work, \
            fresh_broker(PLINTH, Path(work)) as (server, _):
        # When its tree is measured over a second
        costs = idle_broker.measure(server.pid, 1.0)
        logs = Path(work) / "data" / "logs"
        shard_logs = sorted(logs.glob("shard-*.log"))
        serving = [path.read_text() for path in shard_logs]
        controller_log_made = (logs / "controller.log").exists()
    names = sorted(cost.name for cost in costs)
    # Then Ray's API server (dashboard.py), autoscaler monitor (monitor.py) and log
    # monitor (log_monitor.py) are absent
    for skipped in ("dashboard.py", "monitor.py", "log_monitor.py"):
        assert skipped not in names, names
    # And what Plinth needs runs: Ray's GCS, raylet and its two agents (the raylet
    # exits without them), the controller, the default shards, the reaper
    for needed in ("gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent",
                   "ray::Controller", "ray::ShardActor", "plinth.process_reaper",
                   "plinth serve"):
        assert needed in names, names
    # And the shards' log lines, which the log monitor brought to the server's output,
    # are in their own files under the data dir, beside the controller's
    assert controller_log_made
    assert len(shard_logs) == names.count("ray::ShardActor")
    for path, text in zip(shard_logs, serving):
        assert f"{path.stem} serving " in text, (path, text)
    # And the totals add up the rows
    totals = idle_broker.totals(costs)
    assert totals["processes"] == len(costs)
    assert totals["rss_mib"] == round(sum(cost.rss_mib for cost in costs), 1) > 0


def test_the_process_tree_holds_children_and_grandchildren_and_nothing_else():
    # Given a child that starts a grandchild
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
                              "subprocess.run([sys.executable, '-c', 'import sys; sys.stdin.read()'])"],
                             stdin=subprocess.PIPE)
    try:
        def grandchildren():
            return [pid for pid in idle_broker.process_tree(child.pid) if pid != child.pid]
        wait_until(grandchildren, timeout_s=30)
        # Then the tree of the child is the child first, then its child
        tree = idle_broker.process_tree(child.pid)
        assert tree[0] == child.pid and len(tree) == 2
        assert idle_broker.cpu_ticks(tree[1]) is not None
    finally:
        child.stdin.close()   # the grandchild reads stdin (inherited) to its end and exits
        child.wait(30)

