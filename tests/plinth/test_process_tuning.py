"""process_tuning.py: a data-path process's threads come down to the data path's niceness,
what it made while starting is frozen out of the cyclic GC, and its OOM score is raised
to Ray's workers'.

Each case runs in a fresh Python process (niceness is per thread and sticks),
which prints what it saw as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from plinth import limits
from tests.process_tuning_support import may_lower_niceness

# The child: threads at ``start`` niceness (one started before the tuning), then the
# tuning, then a thread started after it; prints every niceness and the report.
CHILD = """
import json, os, resource, sys, threading
from plinth.process_tuning import tune_data_path_process
start, target, drop_privilege = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
if drop_privilege:   # a user without CAP_SYS_NICE and without room in RLIMIT_NICE
    if os.getuid() == 0:
        os.setgid(65534); os.setuid(65534)
    resource.setrlimit(resource.RLIMIT_NICE, (0, 0))
os.setpriority(os.PRIO_PROCESS, 0, start)
seen = {}
stop = threading.Event()
def early():
    seen["early_tid"] = threading.get_native_id()
    stop.wait()
before = threading.Thread(target=early); before.start()
while "early_tid" not in seen:
    pass
report = tune_data_path_process(target, who="test-shard")
after = threading.Thread(target=lambda: seen.update(
    later=os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
after.start(); after.join()
seen["main"] = os.getpriority(os.PRIO_PROCESS, 0)
seen["early"] = os.getpriority(os.PRIO_PROCESS, seen.pop("early_tid"))
stop.set(); before.join()
seen.update(niceness_max_before=report.niceness_max_before,
            threads_reniced=report.threads_reniced, refused=report.refused)
print(json.dumps(seen))
"""


def run_child(start: int, target: int, drop_privilege: bool = False) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(start), str(target),
                          "1" if drop_privilege else "0"],
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not may_lower_niceness(), reason="needs CAP_SYS_NICE or RLIMIT_NICE >= 20")
def test_threads_niced_as_ray_workers_come_down_to_the_data_path_niceness():
    # Given a process whose threads run at niceness 15, as Ray starts its workers
    # When the data-path tuning runs
    seen = run_child(start=15, target=0)
    # Then every thread, the ones already running and one started afterwards, is at 0
    assert (seen["main"], seen["early"], seen["later"]) == (0, 0, 0)
    assert seen["niceness_max_before"] == 15
    assert seen["threads_reniced"] >= 2
    assert seen["refused"] is None


def test_a_thread_already_above_the_target_priority_is_left_alone():
    # Given a process at niceness 3, and a target of 10 (a lower priority)
    seen = run_child(start=3, target=10)
    # Then nothing is reniced: the tuning never lowers a process's priority
    assert (seen["main"], seen["early"], seen["later"]) == (3, 3, 3)
    assert seen["threads_reniced"] == 0
    assert seen["refused"] is None


def test_without_the_privilege_the_threads_keep_their_niceness_and_the_warning_says_why():
    # Given a process at niceness 15 that may not lower its niceness
    seen = run_child(start=15, target=0, drop_privilege=True)
    # Then its threads stay at 15, and the report names the process, the numbers and the fix
    assert (seen["main"], seen["early"]) == (15, 15)
    assert seen["threads_reniced"] == 0
    assert "test-shard" in seen["refused"]
    assert "from 15 to 0" in seen["refused"]
    assert "RAY_worker_niceness=0" in seen["refused"]


# The child: a reference cycle made before the tuning, one made after; what a full
# collection then finds.
FREEZE_CHILD = """
import gc, json
from plinth.process_tuning import tune_data_path_process
gc.disable()   # no collection but ours
class Node:
    pass
def garbage_cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
garbage_cycle()
report = tune_data_path_process(who="test-router")
frozen_after_tuning = gc.get_freeze_count()
found_before = gc.collect()   # the first cycle is frozen: nothing to find
garbage_cycle()
found_after = gc.collect()    # the second is not
print(json.dumps(dict(objects_frozen=report.objects_frozen, frozen=frozen_after_tuning,
                      found_before=found_before, found_after=found_after)))
"""


def test_what_the_process_made_while_starting_is_frozen_and_later_garbage_is_still_collected():
    # Given a process with an unreachable cycle, made before the tuning
    # When the tuning runs, then a full collection, then a new cycle is dropped and collected
    out = subprocess.run([sys.executable, "-c", FREEZE_CHILD], capture_output=True, text=True,
                         timeout=60, check=True)
    seen = json.loads(out.stdout)
    # Then the startup objects (the modules' thousands, and the first cycle) are frozen:
    # a full collection does not scan them
    assert seen["objects_frozen"] > 1000 and seen["frozen"] > 1000
    assert seen["found_before"] == 0
    # And the cycle made afterwards is collected as usual (two Nodes and their dicts)
    assert seen["found_after"] >= 2


# The child: its oom_score_adj set to ``start``, then the tuning with ``wanted``; prints what
# the report and /proc say, and what a child process it starts afterwards inherits.
OOM_CHILD = """
import json, subprocess, sys
from plinth.process_tuning import tune_data_path_process
start, wanted = int(sys.argv[1]), int(sys.argv[2])
with open("/proc/self/oom_score_adj", "w") as f:
    f.write(str(start))
report = tune_data_path_process(who="test-router", oom_score_adj=wanted)
now = int(open("/proc/self/oom_score_adj").read())
child = int(subprocess.run(["cat", "/proc/self/oom_score_adj"], capture_output=True,
                           text=True).stdout)
print(json.dumps(dict(reported=report.oom_score_adj, now=now, child=child)))
"""


def run_oom_child(start: int, wanted: int) -> dict:
    out = subprocess.run([sys.executable, "-c", OOM_CHILD, str(start), str(wanted)],
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_a_router_at_0_is_raised_to_the_oom_score_of_rays_workers():
    # Given a process the OOM killer would spare before Ray's workers (0, as Ray leaves its
    # driver) / When the data-path tuning runs / Then it is the killer's choice as they are
    seen = run_oom_child(start=0, wanted=limits.DATA_PATH_OOM_SCORE_ADJ)
    assert seen == {"reported": 1000, "now": 1000, "child": 1000}


def test_an_oom_score_already_above_the_wanted_one_is_left_alone():
    seen = run_oom_child(start=900, wanted=500)
    assert seen == {"reported": 900, "now": 900, "child": 900}


# The child: frees 800 MB of heap chunks below live ones (glibc keeps that memory), then
# the tuning with a short trim interval; prints its RSS before, and once it fell.
TRIM_CHILD = """
import json, time
from plinth.process_tuning import tune_data_path_process
def rss_mib():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
held, live = [], []
for i in range(8000):
    held.append(bytearray(100_000))
    live.append(bytearray(2000))   # in use above each chunk freed below
del held
before = rss_mib()
report = tune_data_path_process(who="test-router", heap_trim_interval_s=0.05)
deadline = time.monotonic() + 30
while rss_mib() > before // 2 and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps(dict(trimmed=report.heap_trimmed, before=before, after=rss_mib())))
"""


def test_heap_memory_freed_below_live_chunks_goes_back_to_the_system():
    # Given a process that freed 800 MB of heap memory glibc kept (chunks in use above it)
    # When the data-path tuning runs, with its heap trimmer
    out = subprocess.run([sys.executable, "-c", TRIM_CHILD], capture_output=True, text=True,
                         timeout=60, check=True)
    seen = json.loads(out.stdout)
    # Then the memory goes back: the process's RSS falls by more than half
    assert seen["trimmed"] is True
    assert seen["before"] > 150 and seen["after"] < seen["before"] // 2, seen
