"""The router hop's cost, one record at a time: direct to the leader shard against
through the router, on one running broker.

Alternating blocks (so that a slow minute of this shared VM hurts all alike) of
``--records`` produce round trips at ``--rate`` records/s, ``--alternations``
times each, to partition 0 of ``--topic`` (created if missing, one partition):

  * the Producer (``send().get()``, linger 0, acks=1) with ``direct_to_shards``
    False (through the router) and True (the leader's direct socket);
  * a bare DEALER sending one produce request at a time to the router, and to
    the leader's direct socket (the client's own threads left out).

Needs a plaintext broker on loopback with direct sockets (``plinth serve``'s
default); prints p50 / p90 / p99 per client and each shard's requests by socket.

    plinth serve --data-dir /tmp/d --listen tcp://127.0.0.1:7461 &
    python -m loadtest.direct_vs_router --broker tcp://127.0.0.1:7461
"""

from __future__ import annotations

import argparse
import time

import zmq

from plinth import Admin, Producer, protocol
from plinth.client.connection import Connection
from plinth.errors import TopicExistsError
from plinth.format.record_batch import BatchBuilder

REPLY_WAIT_MS = 10_000
VALUE = b"x" * 100


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def paced(one, records: int, rate: float) -> list[float]:
    """``one(i)`` ``records`` times at ``rate`` per second; each call's ms."""
    latencies_ms, next_s = [], time.perf_counter()
    for i in range(records):
        now_s = time.perf_counter()
        if next_s > now_s:
            time.sleep(next_s - now_s)   # pacing, not synchronisation
        next_s += 1 / rate
        started_s = time.perf_counter()
        one(i)
        latencies_ms.append((time.perf_counter() - started_s) * 1000)
    return latencies_ms


def producer_block(broker: str, topic: str, direct: bool, records: int, rate: float):
    with Producer(broker=broker, linger_ms=0, acks=1, direct_to_shards=direct) as producer:
        for _ in range(2):   # the first ones go through the router while the route is learnt
            producer.send(topic, b"warm-up").get(REPLY_WAIT_MS / 1000)
        return paced(lambda i: producer.send(topic, VALUE).get(REPLY_WAIT_MS / 1000),
                     records, rate)


def produce_one(sock: zmq.Socket, address: str, topic: str, request_id: int) -> None:
    """One 100-byte record to partition 0 of ``topic`` on a connected DEALER, awaited;
    raises if no reply comes within REPLY_WAIT_MS or the reply is not a clean produce."""
    builder = BatchBuilder()
    builder.append(None, VALUE, time.time_ns() // 1_000_000, None)
    sock.send_multipart([protocol.encode_produce(request_id, topic, 0, 1), builder.build()])
    if not sock.poll(REPLY_WAIT_MS):
        raise RuntimeError(f"no reply from {address} within {REPLY_WAIT_MS} ms "
                           f"(request {request_id})")
    reply = protocol.decode_reply(sock.recv_multipart()[0])
    if reply.kind != "produce" or reply.error is not None:
        raise RuntimeError(f"{address} answered request {request_id} with {reply}")


def bare_block(address: str, topic: str, records: int, rate: float):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    try:
        produce_one(sock, address, topic, 1)   # connected and answered before the timing starts
        return paced(lambda i: produce_one(sock, address, topic, i + 2), records, rate)
    finally:
        sock.close()


def leader_direct_address(broker: str, topic: str) -> str:
    conn = Connection(broker)
    try:
        request_id = conn.next_request_id()
        view, _ = conn.request(protocol.encode_metadata(request_id, [topic]), request_id,
                               REPLY_WAIT_MS)
    finally:
        conn.close()
    addresses = view.topics[0].direct_addresses
    if not addresses or not addresses[0]:
        raise SystemExit(f"{broker} names no direct socket for {topic}-0 (CurveZMQ, "
                         f"--direct-clients off, or a partition that moved)")
    return addresses[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="tcp://127.0.0.1:7400")
    parser.add_argument("--topic", default="direct-vs-router")
    parser.add_argument("--records", type=int, default=600, help="per block")
    parser.add_argument("--rate", type=float, default=400, help="records/s")
    parser.add_argument("--alternations", type=int, default=3)
    args = parser.parse_args()
    with Admin(broker=args.broker) as admin:
        try:
            admin.create_topic(args.topic, 1)
        except TopicExistsError:
            pass
    direct_address = leader_direct_address(args.broker, args.topic)
    blocks = {
        "Producer, through the router": lambda: producer_block(
            args.broker, args.topic, False, args.records, args.rate),
        "Producer, direct": lambda: producer_block(
            args.broker, args.topic, True, args.records, args.rate),
        "bare DEALER, through the router": lambda: bare_block(
            args.broker, args.topic, args.records, args.rate),
        "bare DEALER, direct": lambda: bare_block(
            direct_address, args.topic, args.records, args.rate),
    }
    results: dict[str, list[float]] = {name: [] for name in blocks}
    for _ in range(args.alternations):
        for name, block in blocks.items():
            results[name] += block()
    print(f"one record at a time, {args.rate:.0f} records/s, {args.alternations} x "
          f"{args.records} records each, acks=1; ms")
    for name, latencies_ms in results.items():
        print(f"  {name:34s} p50 {percentile(latencies_ms, 50):.3f}  "
              f"p90 {percentile(latencies_ms, 90):.3f}  p99 {percentile(latencies_ms, 99):.3f}")
    with Admin(broker=args.broker) as admin:
        for shard in admin.status().shards:
            print(f"  {shard.shard_id}: {shard.requests_direct} requests direct, "
                  f"{shard.requests_via_router} through routers")


if __name__ == "__main__":
    main()
