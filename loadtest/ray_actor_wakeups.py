"""What an idle Ray actor process costs, by how its actor runs (issue 13's idle goal).

Ray 2.60 re-arms a 10 ms timer on the main thread of every actor process to check
for signals (``CoreWorker.CheckSignal``), taking the GIL each time; an idle
broker pays it in the controller's process and in each shard's. The timer runs
on the loop that also runs the actor's tasks, so it should not fire while a
task holds that thread. This starts a local Ray (127.0.0.1) with three actors
that do nothing, each with one call in progress that waits on an event:

    sync-parked          a plain actor: its one call waits on its main thread
    threaded             max_concurrency=2: the call waits on a pool thread
    concurrency-groups   a "control" group beside the default: the call waits on
                         the default group's thread, the group answers meanwhile

and reads, over ``--seconds``, each process's CPU time and the voluntary
context switches (wake-ups) of its main thread and of all its threads, from
/proc. It prints one line per actor.

    python -m loadtest.ray_actor_wakeups --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


class IdleActor:
    """Does nothing; ``wait`` holds the thread it runs on until the process ends."""

    def where(self) -> tuple[int, int]:
        """(pid, the native id of the thread this call runs on)."""
        return os.getpid(), threading.get_native_id()

    def wait(self) -> None:
        threading.Event().wait()


def wakeups(pid: int) -> dict[int, int]:
    """Thread id -> its voluntary context switches so far."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as status:
                for line in status:
                    if line.startswith("voluntary_ctxt_switches"):
                        out[int(tid)] = int(line.split()[1])
        except FileNotFoundError:
            pass   # a thread that ended
    return out


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def measure(seconds: float) -> dict[str, dict[str, float]]:
    import ray

    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
             log_to_driver=False, num_cpus=4)
    try:
        actors = {"sync-parked": ray.remote(IdleActor).remote(),
                  "threaded": ray.remote(max_concurrency=2)(IdleActor).remote(),
                  "concurrency-groups": ray.remote(concurrency_groups={"control": 1})(
                      IdleActor).remote()}
        pids = {name: ray.get(actor.where.remote())[0] for name, actor in actors.items()}
        for actor in actors.values():
            actor.wait.remote()
        # The groups' actor still answers on its other group while its call waits.
        ray.get(actors["concurrency-groups"].where.options(concurrency_group="control").remote())
        before = {name: (cpu_s(pid), wakeups(pid)) for name, pid in pids.items()}
        time.sleep(seconds)   # the interval measured, not a wait for a state
        after = {name: (cpu_s(pid), wakeups(pid)) for name, pid in pids.items()}
    finally:
        ray.shutdown()
    results = {}
    for name, pid in pids.items():
        (cpu_before, wakes_before), (cpu_after, wakes_after) = before[name], after[name]
        results[name] = {
            "cpu_percent": round(100 * (cpu_after - cpu_before) / seconds, 2),
            "main_thread_wakeups_per_s": round(
                (wakes_after.get(pid, 0) - wakes_before.get(pid, 0)) / seconds, 1),
            "all_threads_wakeups_per_s": round(
                sum(count - wakes_before.get(tid, 0) for tid, count in wakes_after.items())
                / seconds, 1)}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be above 0")
    results = measure(args.seconds)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"idle Ray actors over {args.seconds:g} s:")
    print(f"  {'actor':20s} {'CPU %':>7s} {'main thread wake-ups/s':>23s} {'all threads':>12s}")
    for name, result in results.items():
        print(f"  {name:20s} {result['cpu_percent']:7.2f} "
              f"{result['main_thread_wakeups_per_s']:23.1f} "
              f"{result['all_threads_wakeups_per_s']:12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
