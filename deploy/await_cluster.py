"""Wait until this node's Ray cluster is ready for the next Plinth process.

Runs on a cluster node, in the shell command that starts Plinth there
(deploy/ray-cluster.yaml, deploy/kuberay-raycluster.yaml):

    python deploy/await_cluster.py --nodes 3 --timeout-s 600         # before plinth serve
    python deploy/await_cluster.py --broker plinth --timeout-s 600   # before plinth router

``--nodes N`` waits until N Ray nodes are alive. ``plinth serve`` places its
shards with SPREAD scheduling, which sees only the nodes that have joined when
the shards start, so a broker started before the workers would put every
shard on the head.

``--broker NAME`` waits until the broker started with ``plinth serve
--cluster-name NAME`` runs in the cluster: ``plinth router`` exits at once
when there is none.

Joins the Ray cluster at ``--ray-address`` (default ``auto``: the one this
node belongs to) as a driver, with the environment's Ray token. Exits 0 when
ready, 1 after ``--timeout-s`` with one line saying what was missing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

POLL_INTERVAL_S = 2.0        # between two looks at the cluster
TIMEOUT_S_DEFAULT = 600.0    # a first start pulls images and installs; restarts take seconds


def wait_until(ready: Callable[[], bool], timeout_s: float, *, interval_s: float = POLL_INTERVAL_S,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> bool:
    """Call ``ready()`` every ``interval_s`` until it is true (returns True) or
    ``timeout_s`` has passed (returns False). Checks at least once."""
    deadline_s = clock() + timeout_s
    while True:
        if ready():
            return True
        remaining_s = deadline_s - clock()
        if remaining_s <= 0:
            return False
        sleep(min(interval_s, remaining_s))


def alive_node_count() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node["Alive"])


def broker_runs(cluster_name: str) -> bool:
    """Whether the controller of ``plinth serve --cluster-name cluster_name`` is registered."""
    import ray

    from plinth.server import CONTROLLER_NAME, namespace_for

    try:
        ray.get_actor(CONTROLLER_NAME, namespace=namespace_for(Path("."), cluster_name))
    except ValueError:
        return False
    return True


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="await_cluster.py", description=__doc__.splitlines()[0],
                                allow_abbrev=False)
    p.add_argument("--nodes", type=_positive_int, metavar="N",
                   help="wait until N Ray nodes are alive (before plinth serve)")
    p.add_argument("--broker", metavar="NAME",
                   help="wait until the broker with --cluster-name NAME runs (before plinth router)")
    p.add_argument("--timeout-s", type=_positive_seconds, default=TIMEOUT_S_DEFAULT,
                   help=f"give up after this long (default {TIMEOUT_S_DEFAULT:g})")
    p.add_argument("--ray-address", default="auto", help="the Ray cluster (default: this node's)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(argv)
    if args.nodes is None and args.broker is None:
        p.error("give --nodes N, --broker NAME, or both")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    ray.init(address=args.ray_address, logging_level="ERROR", log_to_driver=False)
    try:
        deadline_s = time.monotonic() + args.timeout_s
        if args.nodes is not None:
            if not wait_until(lambda: alive_node_count() >= args.nodes, deadline_s - time.monotonic()):
                print(f"await_cluster: {alive_node_count()} of {args.nodes} Ray nodes alive "
                      f"after {args.timeout_s:g} s", file=sys.stderr)
                return 1
            print(f"await_cluster: {args.nodes} Ray nodes alive", flush=True)
        if args.broker is not None:
            if not wait_until(lambda: broker_runs(args.broker), deadline_s - time.monotonic()):
                print(f"await_cluster: no broker named {args.broker!r} in the Ray cluster after "
                      f"{args.timeout_s:g} s (plinth serve --cluster-name {args.broker})",
                      file=sys.stderr)
                return 1
            print(f"await_cluster: broker {args.broker!r} runs", flush=True)
        return 0
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
