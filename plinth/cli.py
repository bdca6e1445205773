"""The ``plinth`` command line: serve, topic, produce, consume.

Runs in the user's shell process. Client commands take ``--broker URL``
(environment PLINTH_BROKER, default tcp://127.0.0.1:7400). Every error a user
can cause ends in one line on stderr naming the problem, and a non-zero exit.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from plinth import limits
from plinth.errors import PlinthError

DEFAULT_BROKER = "tcp://127.0.0.1:7400"


class _Group(click.Group):
    """Turns Plinth's own errors into one clear line and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PlinthError as exc:
            click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.option("--broker", envvar="PLINTH_BROKER", default=DEFAULT_BROKER, show_default=True,
              help="Router address for client commands.")
@click.option("--request-timeout-ms", type=click.IntRange(1, 3_600_000), default=30_000,
              show_default=True, help="How long client commands wait for the broker.")
@click.pass_context
def main(ctx, broker, request_timeout_ms):
    """Plinth: a durable, partitioned log broker."""
    ctx.obj = {"broker": broker, "request_timeout_ms": request_timeout_ms}


@main.command()
@click.option("--data-dir", default="./plinth-data", show_default=True, type=click.Path(path_type=Path))
@click.option("--listen", default=DEFAULT_BROKER, show_default=True, help="Address of the router socket.")
@click.option("--shards", type=click.IntRange(1, limits.SHARDS_MAX), default=None,
              help="Shard actors (default: one per CPU, or as the data dir was created).")
@click.option("--ray-address", default=None, help="Join this Ray cluster instead of starting one.")
@click.option("--fsync-policy", type=click.Choice(["always", "interval", "never"]), default="always",
              show_default=True, help="always: acknowledge a produce only after fsync.")
@click.option("--fsync-interval-ms", type=click.IntRange(1, 3_600_000),
              default=limits.FSYNC_INTERVAL_MS_DEFAULT, show_default=True)
def serve(data_dir, listen, shards, ray_address, fsync_policy, fsync_interval_ms):
    """Run the broker until SIGTERM or Ctrl-C."""
    from plinth.server import ServeOptions, serve as run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    options = ServeOptions(data_dir=data_dir, listen=listen, shards=shards, ray_address=ray_address,
                           fsync_policy=fsync_policy, fsync_interval_ms=fsync_interval_ms)
    sys.exit(run(options, ready=lambda line: click.echo(line, err=False) or sys.stdout.flush()))


# --- topic ---------------------------------------------------------------------

@main.group()
def topic():
    """Create, list, describe and delete topics."""


def _admin(ctx):
    from plinth.client.admin import Admin

    return Admin(broker=ctx.obj["broker"], request_timeout_ms=ctx.obj["request_timeout_ms"])


@topic.command("create")
@click.argument("name")
@click.option("--partitions", type=int, default=1, show_default=True)
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE",
              help="Topic config, e.g. segment.bytes=1048576 (repeatable).")
@click.pass_context
def topic_create(ctx, name, partitions, configs):
    config = {}
    for item in configs:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--config")
        config[key] = value
    with _admin(ctx) as admin:
        info = admin.create_topic(name, partitions, config=config)
    click.echo(f"created topic {info.name} with {info.partitions} partitions")


@topic.command("list")
@click.pass_context
def topic_list(ctx):
    with _admin(ctx) as admin:
        for name in admin.list_topics():
            click.echo(name)


@topic.command("describe")
@click.argument("name")
@click.pass_context
def topic_describe(ctx, name):
    with _admin(ctx) as admin:
        info = admin.describe_topic(name)
    config = " ".join(f"{k}={v}" for k, v in sorted(info.config.items()))
    click.echo(f"topic {info.name}  partitions {info.partitions}  {config}")
    click.echo(f"{'partition':>9}  {'shard':<10} {'start':>12} {'end':>12} {'bytes':>14}")
    for p in info.partition_info:
        click.echo(f"{p.partition:>9}  {p.shard:<10} {p.start_offset:>12} {p.end_offset:>12} {p.size_bytes:>14}")


@topic.command("delete")
@click.argument("name")
@click.pass_context
def topic_delete(ctx, name):
    with _admin(ctx) as admin:
        admin.delete_topic(name)
    click.echo(f"deleted topic {name}")


# --- produce / consume -----------------------------------------------------------

@main.command()
@click.argument("topic_name", metavar="TOPIC")
@click.option("--partition", type=int, default=None)
@click.option("--key-separator", default=None, help="Text before the first SEP is the key.")
@click.option("--acks", type=click.Choice(["0", "1", "all"]), default="1", show_default=True)
@click.option("--linger-ms", type=float, default=5, show_default=True)
@click.pass_context
def produce(ctx, topic_name, partition, key_separator, acks, linger_ms):
    """Send one record per line of stdin."""
    from plinth.client.producer import Producer

    acks_value = "all" if acks == "all" else int(acks)
    futures = []
    with Producer(broker=ctx.obj["broker"], acks=acks_value, linger_ms=linger_ms,
                  request_timeout_ms=ctx.obj["request_timeout_ms"]) as producer:
        producer.partitions_for(topic_name)   # an unknown topic fails before reading stdin
        for line in sys.stdin.buffer:
            line = line.rstrip(b"\r\n")
            key = None
            if key_separator is not None:
                key, sep, rest = line.partition(key_separator.encode())
                if not sep:
                    raise click.UsageError(f"line {len(futures) + 1} has no key separator {key_separator!r}")
                line = rest
            futures.append(producer.send(topic_name, line, key=key, partition=partition))
        producer.flush()
    for future in futures:
        future.get(timeout=0)   # raises the first failure, so the exit status says so
    click.echo(f"produced {len(futures)} records to {topic_name}", err=True)


@main.command()
@click.argument("topic_name", metavar="TOPIC")
@click.option("--partition", type=int, default=None, help="Only this partition.")
@click.option("--offset", type=int, default=None, help="Start here (needs --partition).")
@click.option("--from-beginning", is_flag=True, help="Start at the earliest offset.")
@click.option("--max-messages", type=int, default=None, help="Exit after N records.")
@click.option("--timeout-ms", type=int, default=None, help="Exit after T ms without new records.")
@click.option("--print-key", is_flag=True, help="Print KEY<TAB>VALUE.")
@click.pass_context
def consume(ctx, topic_name, partition, offset, from_beginning, max_messages, timeout_ms, print_key):
    """Print records' values, one per line."""
    from plinth.client.consumer import Consumer

    if offset is not None and partition is None:
        raise click.UsageError("--offset needs --partition")
    consumer = Consumer(broker=ctx.obj["broker"], request_timeout_ms=ctx.obj["request_timeout_ms"],
                        auto_offset_reset="earliest" if from_beginning else "latest",
                        consumer_timeout_ms=float("inf") if timeout_ms is None else timeout_ms)
    with consumer:
        if partition is None:
            consumer.subscribe([topic_name])
        else:
            consumer.assign([(topic_name, partition)])
            if offset is not None:
                consumer.seek(topic_name, partition, offset)
        _print_records(consumer, max_messages, print_key)


def _print_records(consumer, max_messages, print_key) -> None:
    out = sys.stdout.buffer
    count = 0
    for record in consumer:
        value = record.value or b""
        if print_key:
            out.write((record.key or b"") + b"\t" + value + b"\n")
        else:
            out.write(value + b"\n")
        out.flush()   # a reader of the pipe sees each record as it arrives
        count += 1
        if max_messages is not None and count >= max_messages:
            break
    out.flush()


if __name__ == "__main__":
    main()
