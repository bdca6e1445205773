"""The shard's produce round trip, one request at a time, beside the floor under it.

A bare DEALER in this process sends one produce request (one 100-byte record, no
key, acks=1) at a time at ``--rate`` requests/s and awaits each reply, the same
way to three servers, one after the other, each alone in a spawned child
process (its own GIL) on 127.0.0.1:

  * the floor: a bare Python ROUTER loop that only receives each request and
    answers it with a ready-made produce reply (poll, recv, send);
  * the floor with disk work: the same loop appending 170 bytes to a file and
    fsyncing it before each answer;
  * the ``ShardServer``: fsync policy ``--fsync-policy`` (``always`` unless
    told), one partition, its direct socket (no router, no Ray).

Prints p50 / p90 / p99 / p99.9 / max of the round trip in ms and the load
average after each, and each figure's ratio to the floor that does the same
disk work: the floor with fsync to the bare floor, the shard to the floor with
fsync if its policy is ``always``, else to the bare floor. The difference
between the shard and its floor is the shard's own Python (README, "The
shard's produce path, one request at a time"). A benchmark, not a test: it
asserts nothing about the numbers.

With ``--transports BLOCKS`` it measures instead the one lever of issue 13 that
is the transport alone: two ShardServers at once, whose direct sockets are TCP
on 127.0.0.1 and ipc:// (as the embedded broker binds it), in alternating
blocks of ``--records`` requests, and prints each's figures and the median
difference of the block medians.

    python -m loadtest.shard_round_trip --records 3000 --rate 200
    python -m loadtest.shard_round_trip --fsync-policy never --json
    python -m loadtest.shard_round_trip --transports 40 --records 100 --rate 200
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import zmq

from loadtest.direct_vs_router import VALUE, paced, percentile, produce_one
from plinth import protocol
from plinth.cluster_keys import ClusterKeys, make_ipc_dir
from plinth.shards.partition_log import LogConfig
from plinth.shards.shard_server import ShardServer

# What the floor writes per request: about one small batch (the measured
# floor's size; the shard's batch of one 100-byte record is 224 bytes, and
# one sub-page append costs the same fsync).
FLOOR_APPEND = b"x" * 170
TOPIC = "round-trip"
WARM_UP_REQUESTS = 50        # answered before the timing starts (connect, first appends)
REPLY_WAIT_MS = 10_000       # a request unanswered this long fails the run
START_TIMEOUT_S = 60.0       # for a child to send its address (spawn imports plinth)
STOP_TIMEOUT_S = 10.0        # for a child to end after the stop word, then again after SIGKILL
SHARD_STOP_GRACE_S = 5.0     # ShardServer.stop's flush and close
FLOOR_IDLE_POLL_MS = 1000    # an idle floor looks for the stop word this often
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9), ("max", 100.0))
SERVERS = ("floor", "floor_fsync", "shard")
TRANSPORTS = ("tcp", "ipc")


# --- The servers (each in its own spawned child process) ---------------------

def serve_shard(conn, data_dir: str, fsync_policy: str, ipc: bool = False) -> None:
    """Child process: a ShardServer with partition 0 of TOPIC and its direct socket
    (with ``ipc``, over ipc:// as the embedded ``plinth serve`` binds it, else on
    127.0.0.1 TCP). Sends the direct socket's address, serves until the parent sends
    the stop word (or goes away), then stops the server."""
    keys = None
    if ipc:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        keys = dataclasses.replace(ClusterKeys.generate(), ipc_dir=make_ipc_dir(Path(data_dir)))
    server = ShardServer("shard-round-trip", Path(data_dir), "127.0.0.1",
                         fsync_policy=fsync_policy, cluster_keys=keys, direct_clients=True)
    server.start()
    try:
        server.call(server.open_partition, TOPIC, 0, LogConfig())
        conn.send(server.direct_address)
        _wait_for_stop(conn)
    finally:
        server.stop(SHARD_STOP_GRACE_S)


def serve_floor(conn, log_path: str, fsync: bool) -> None:
    """Child process: a bare ROUTER loop that answers every request with one ready-made
    produce reply (with ``fsync``, after appending FLOOR_APPEND to ``log_path`` and
    fsyncing it). Sends its address, serves until the stop word or the parent's end."""
    context = zmq.Context(io_threads=1)
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    fd = os.open(log_path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    try:
        conn.send(f"tcp://127.0.0.1:{port}")
        _floor_loop(conn, router, fd if fsync else None)
    finally:
        os.close(fd)
        router.close(linger=0)
        context.term()


def _floor_loop(conn, router: zmq.Socket, fd: int | None) -> None:
    # The same reply the shard sends (56 bytes), made once: the floor does no work
    # a loop on this socket could skip.
    reply = protocol.encode_produce_reply(0, 0)
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    while True:
        if not poller.poll(FLOOR_IDLE_POLL_MS):
            if conn.poll():   # the stop word, or the parent gone (EOF)
                return
            continue
        frames = router.recv_multipart(copy=False)
        if fd is not None:
            os.write(fd, FLOOR_APPEND)
            os.fsync(fd)
        router.send_multipart([frames[0], reply], copy=False)


def _wait_for_stop(conn) -> None:
    try:
        conn.recv()
    except EOFError:   # the parent went away: stop as well
        pass


# --- The child processes (this process) --------------------------------------

@contextmanager
def child_server(name: str, target, *args):
    """Run ``target(conn, *args)`` in a spawned child and yield the address it sends.
    However the block ends, the child gets the stop word, is joined within
    STOP_TIMEOUT_S, and is killed if it has not ended by then."""
    spawn = multiprocessing.get_context("spawn")
    parent_end, child_end = spawn.Pipe()
    process = spawn.Process(target=target, args=(child_end, *args), name=name, daemon=True)
    process.start()
    child_end.close()   # the child holds its own copy: its end means EOF here
    try:
        yield _address_from(name, parent_end, process)
    finally:
        _stop_child(name, parent_end, process)


def _address_from(name: str, conn, process) -> str:
    if not conn.poll(START_TIMEOUT_S):
        raise RuntimeError(f"{name} (pid {process.pid}) sent no address within "
                           f"{START_TIMEOUT_S} s")
    try:
        return conn.recv()
    except EOFError:
        process.join(STOP_TIMEOUT_S)
        raise RuntimeError(f"{name} (pid {process.pid}) ended with exit code "
                           f"{process.exitcode} before sending its address") from None


def _stop_child(name: str, conn, process) -> None:
    try:
        conn.send("stop")
    except OSError:   # it has already ended
        pass
    process.join(STOP_TIMEOUT_S)
    if process.is_alive():
        print(f"{name} (pid {process.pid}) did not stop within {STOP_TIMEOUT_S} s; killing it",
              file=sys.stderr)
        process.kill()
        process.join(STOP_TIMEOUT_S)
    conn.close()


# --- The measurement (this process) ------------------------------------------

def measure(address: str, records: int, rate: float) -> list[float]:
    """WARM_UP_REQUESTS produce requests, then ``records`` more at ``rate`` per second,
    each awaited before the next; the timed ones' round trips in ms."""
    with warm_client(address) as one:
        return paced(one, records, rate)


@contextmanager
def warm_client(address: str):
    """A DEALER to ``address`` that has had WARM_UP_REQUESTS answered; yields ``one(i)``,
    which sends the next produce request and awaits its reply."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    request_ids = itertools.count(1)

    def one(_i: int = 0) -> None:
        produce_one(sock, address, TOPIC, next(request_ids))

    try:
        for _ in range(WARM_UP_REQUESTS):
            one()
        yield one
    finally:
        sock.close()


def compare_transports(blocks: int, block_records: int, rate: float,
                       fsync_policy: str) -> dict[str, dict]:
    """Two ShardServers at once, one whose direct socket is TCP on 127.0.0.1 and one
    whose is ipc:// (the embedded broker's); ``blocks`` blocks of ``block_records``
    requests to each, alternating A B B A, so that a slow minute of this shared
    machine falls on both. Per transport its figures in ms; for ipc also the median
    over blocks of (its block's p50 - tcp's block p50) in µs, and in how many blocks
    ipc was faster."""
    latencies = {name: [] for name in TRANSPORTS}
    block_p50s = {name: [] for name in TRANSPORTS}
    with tempfile.TemporaryDirectory(prefix="plinth-round-trip-", dir="/tmp") as work, \
            child_server("tcp", serve_shard, str(Path(work) / "tcp"), fsync_policy) as tcp, \
            child_server("ipc", serve_shard, str(Path(work) / "ipc"), fsync_policy, True) as ipc, \
            warm_client(tcp) as tcp_one, warm_client(ipc) as ipc_one:
        ones = {"tcp": tcp_one, "ipc": ipc_one}
        for block in range(blocks):
            for name in (TRANSPORTS if block % 2 == 0 else TRANSPORTS[::-1]):
                block_ms = paced(ones[name], block_records, rate)
                latencies[name] += block_ms
                block_p50s[name].append(percentile(block_ms, 50.0))
    differences_us = [(i - t) * 1000 for i, t in zip(block_p50s["ipc"], block_p50s["tcp"])]
    results = {name: {"latency_ms": summary_ms(latencies[name])} for name in TRANSPORTS}
    results["ipc"]["block_p50_difference_us"] = round(statistics.median(differences_us), 1)
    results["ipc"]["blocks_faster"] = sum(d < 0 for d in differences_us)
    results["load_average"] = load_average()
    return results


def format_transports(results: dict, blocks: int, block_records: int, rate: float) -> str:
    lines = [f"the ShardServer's direct socket over TCP and over ipc://: {blocks} blocks of "
             f"{block_records} requests each way at {rate:g}/s, alternating; ms",
             f"{'':8}" + "".join(f"{name:>10}" for name, _ in PERCENTILES)]
    for name in TRANSPORTS:
        lines.append(f"{name:<8}" + "".join(f"{results[name]['latency_ms'][p]:>10.3f}"
                                            for p, _ in PERCENTILES))
    ipc = results["ipc"]
    load = " ".join(f"{v:.2f}" for v in results["load_average"])
    lines.append(f"ipc - tcp, median over blocks of the block p50: "
                 f"{ipc['block_p50_difference_us']:+.1f} µs; ipc faster in "
                 f"{ipc['blocks_faster']} of {blocks} blocks; load after {load}")
    return "\n".join(lines)


def summary_ms(latencies_ms: list[float]) -> dict[str, float]:
    """Each of PERCENTILES, to the tenth of a microsecond."""
    return {name: round(percentile(latencies_ms, p), 4) for name, p in PERCENTILES}


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (this machine is shared)."""
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def run(records: int, rate: float, fsync_policy: str) -> dict[str, dict]:
    """The three servers in turn, each measured alone; per server its figures in ms and
    the load average right after."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="plinth-round-trip-", dir="/tmp") as work:
        children = {
            "floor": (serve_floor, str(Path(work) / "floor.log"), False),
            "floor_fsync": (serve_floor, str(Path(work) / "floor-fsync.log"), True),
            "shard": (serve_shard, str(Path(work) / "shard"), fsync_policy),
        }
        for name in SERVERS:
            with child_server(name, *children[name]) as address:
                latencies_ms = measure(address, records, rate)
                results[name] = {"latency_ms": summary_ms(latencies_ms),
                                 "load_average": load_average()}
    return results


# --- The report ----------------------------------------------------------------

def floor_of(name: str, fsync_policy: str) -> str | None:
    """The server whose figures ``name``'s are divided by: the floor doing the same disk
    work (None for the bare floor itself)."""
    if name == "floor":
        return None
    if name == "floor_fsync" or fsync_policy != "always":
        return "floor"
    return "floor_fsync"


def with_ratios(results: dict[str, dict], fsync_policy: str) -> dict[str, dict]:
    """``results`` with each server's ratio to its floor, per percentile, and the
    floor's name."""
    out = {}
    for name, result in results.items():
        base = floor_of(name, fsync_policy)
        ratios = None if base is None else {
            p: round(result["latency_ms"][p] / results[base]["latency_ms"][p], 3)
            for p, _ in PERCENTILES}
        out[name] = {**result, "ratio_to": base, "ratio": ratios}
    return out


def format_table(results: dict[str, dict], records: int, rate: float,
                 fsync_policy: str) -> str:
    """``results`` as with_ratios makes them: a row per server."""
    titles = {"floor": "floor: receive, answer",
              "floor_fsync": f"floor: + append {len(FLOOR_APPEND)} B, fsync",
              "shard": f"ShardServer, fsync {fsync_policy}"}
    lines = [f"one produce request at a time from a bare DEALER: {records} records at "
             f"{rate:g}/s, {len(VALUE)}-byte values, 1 partition; ms (÷ the floor doing the "
             f"same disk work)",
             f"{'':34}" + "".join(f"{name:>16}" for name, _ in PERCENTILES) + "   load 1/5/15 min"]
    for name in SERVERS:
        result = results[name]
        cells = [f"{result['latency_ms'][p]:.3f}" + (
            f" ({result['ratio'][p]:.2f}x)" if result["ratio"] else "") for p, _ in PERCENTILES]
        load = " ".join(f"{v:.2f}" for v in result["load_average"])
        lines.append(f"{titles[name]:<34}" + "".join(f"{c:>16}" for c in cells) + f"   {load}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=3000, help="timed requests per server")
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s")
    parser.add_argument("--fsync-policy", choices=("always", "interval", "never"),
                        default="always", help="the ShardServer's")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--transports", type=int, metavar="BLOCKS", default=0,
                        help="instead: the shard's direct socket over TCP against ipc://, "
                             "BLOCKS blocks of --records requests each, alternating")
    args = parser.parse_args(argv)
    if args.records < 1 or args.rate <= 0 or args.transports < 0:
        parser.error(f"--records must be at least 1, --rate above 0 and --transports at "
                     f"least 0, not {args.records}, {args.rate:g} and {args.transports}")
    if args.transports:
        results = compare_transports(args.transports, args.records, args.rate,
                                     args.fsync_policy)
        print(json.dumps(results) if args.json else
              format_transports(results, args.transports, args.records, args.rate))
        return 0
    results = with_ratios(run(args.records, args.rate, args.fsync_policy), args.fsync_policy)
    if args.json:
        print(json.dumps({"records": args.records, "rate": args.rate,
                          "value_bytes": len(VALUE), "fsync_policy": args.fsync_policy,
                          "servers": results}))
    else:
        print(format_table(results, args.records, args.rate, args.fsync_policy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
