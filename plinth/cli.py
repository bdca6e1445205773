"""The ``plinth`` command line: serve, topic, produce, consume, bench.

Runs in the user's shell process. Client commands take ``--broker URL``
(environment PLINTH_BROKER, default limits.BROKER_URL_DEFAULT, tcp://127.0.0.1:7400). Every error a user
can cause ends in one line on stderr naming the problem, and a non-zero exit.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections import deque
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click

from plinth import limits, topics
from plinth.cli_groups import OFFSET_MAX, admin_for as _admin, echo_pages, group_cli
from plinth.cli_json import (echo_json, every_config, json_option, names_json,
                             replication_factor, status_json, topic_json)
from plinth.counted import counted
from plinth.errors import ElectionNotNeededError, InvalidConfigError, PlinthError
from plinth.version import VERSION



_PARTITION = click.IntRange(0, limits.PARTITIONS_PER_TOPIC_MAX - 1)


class _FiniteFloatRange(click.FloatRange):
    """click's FloatRange, which passes nan (every comparison with nan is false) and inf;
    a time or rate option given either is refused here, naming the option, rather than
    failing later in a constructor with a traceback."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if number != number or number in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class _TopicId(click.ParamType):
    """A topic id as `topic describe` shows it (32 hex digits, or the same as a dashed
    UUID), checked as Admin checks it (client/arguments.py checked_topic_id): a
    malformed one is a usage error naming the option, not a traceback from the call."""

    name = "topic_id"

    def convert(self, value, param, ctx):
        from plinth.client.arguments import checked_topic_id
        try:
            return checked_topic_id("--topic-id", value)
        except ValueError:
            self.fail(f"{value!r} is not a topic id: 32 hex digits, as `topic describe` shows "
                      f"it (or the same as a dashed UUID)", param, ctx)


# plinth's own options, each taking a value, that a client command also takes after
# its name; `plinth console` has options of these names of its own.
_GLOBAL_OPTIONS = ("--broker", "--request-timeout-ms", "--curve-key-file",
                   "--curve-server-key-file")
_COMMANDS_WITH_THEIR_OWN = ("console",)


def global_options_first(args: list[str]) -> list[str]:
    """``args`` with plinth's own options given after the command moved before it:
    `plinth topic list --broker URL` is `plinth --broker URL topic list`, as Kafka's
    tools take --bootstrap-server after theirs. Nothing after a ``--`` moves; an
    option given twice keeps the last value, as click does."""
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        i += 2 if args[i] in _GLOBAL_OPTIONS else 1
    if i >= len(args) or args[i] in _COMMANDS_WITH_THEIR_OWN:
        return list(args)
    front, rest = list(args[:i]), []
    tail = args[i:]
    k = 0
    while k < len(tail):
        arg = tail[k]
        if arg == "--":
            rest += tail[k:]
            break
        if arg.split("=", 1)[0] in _GLOBAL_OPTIONS and ("=" in arg or k + 1 < len(tail)):
            taken = 1 if "=" in arg else 2
            front += tail[k:k + taken]
            k += taken
        else:
            rest.append(arg)
            k += 1
    return front + rest


class _Group(click.Group):
    """Takes plinth's own options after the command too (``global_options_first``);
    turns Plinth's own errors into one clear line and exit status 1, and a reader that
    went away (``plinth consume ... | head``) into a quiet exit, 141."""

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, global_options_first(args))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PlinthError as exc:
            _exit_with_error(exc, 1)
        except KeyboardInterrupt:   # Ctrl-C: the shell's 128 + SIGINT, not click's failure 1
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            _exit_on_closed_stdout()


def _exit_on_closed_stdout():
    """The reader of stdout is gone (``| head`` read what it wanted): exit quietly with
    128 + SIGPIPE, as a command the signal ended does (``cat`` in ``cat f | head``), not
    with click's bare status 1 that said nothing (tester M, session 40). stdout points at
    /dev/null first, so that the interpreter's flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    sys.exit(EXIT_BROKEN_PIPE)


# The exit status of a command stopped by Ctrl-C, as a shell reports one (128 + SIGINT):
# a script tells the operator's stop from a failure (1) and from a usage error (2).
EXIT_INTERRUPTED = 130
# The exit status of a command whose reader closed its stdout (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141


def _exit_with_error(exc: PlinthError, status: int):
    """Say ``exc`` in one ``error:`` line on stderr and exit with ``status``."""
    click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
    sys.exit(status)


class UserError(click.ClickException):
    """A user's mistake found only while a command runs (an input line, a path that
    cannot be used): one ``error:`` line and exit status 1, as Plinth's own errors."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _listen_url(ctx, param, value: str) -> str:
    """--listen checked: tcp://HOST:PORT, a port in 1..65535 (ZeroMQ would bind a larger
    one modulo 65536, and say only "Invalid argument" about a malformed address);
    HOST:PORT is taken as tcp://HOST:PORT, as --broker takes it."""
    from plinth.client.connection import check_url

    url = value if "://" in value else f"tcp://{value}"
    try:
        check_url(url, "address", bind=True)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return url


def _not_empty(ctx, param, value: str | None) -> str | None:
    if value == "":
        raise click.BadParameter("must not be empty")
    return value


@click.group(cls=_Group)
@click.version_option(VERSION, "--version", prog_name="plinth",
                      message="%(prog)s %(version)s")
@click.option("--broker", envvar="PLINTH_BROKER", show_envvar=True,
              default=limits.BROKER_URL_DEFAULT, show_default=True, metavar="URL[,URL...]",
              help="Router address for client commands, tcp://HOST:PORT (tcp:// may be left "
                   "out); several, comma-separated, to fail over between routers.")
@click.option("--request-timeout-ms", type=click.IntRange(1, limits.CLI_REQUEST_TIMEOUT_MS_MAX),
              default=limits.CLIENT_REQUEST_TIMEOUT_MS_DEFAULT,
              show_default=True, help="How long client commands wait for the broker (produce: "
                                      "for each record, after its linger).")
@click.option("--curve-key-file", envvar="PLINTH_CURVE_KEY_FILE", default=None,
              type=click.Path(exists=True, dir_okay=False),
              help="This client's .key_secret (plinth keygen), for a CurveZMQ broker.")
@click.option("--curve-server-key-file", envvar="PLINTH_CURVE_SERVER_KEY_FILE", default=None,
              type=click.Path(exists=True, dir_okay=False), help="The broker's public .key file.")
@click.pass_context
def main(ctx, broker, request_timeout_ms, curve_key_file, curve_server_key_file):
    """Plinth: a durable, partitioned log broker."""
    from plinth.client.connection import broker_address, broker_url

    ctx.obj = {"broker": broker, "request_timeout_ms": request_timeout_ms,
               "curve_key_file": curve_key_file, "curve_server_key_file": curve_server_key_file}
    if ctx.invoked_subcommand not in ("serve", "router", "keygen", "kafka-user", "console",
                                  "console-auth"):
        option = _broker_option_name(ctx)
        try:
            urls = broker_url(broker)
        except ValueError as exc:
            if option == "--broker":
                raise click.BadParameter(str(exc), param_hint="'--broker'") from None
            # Named as the user set it: the message's tcp://-prefixed form is not
            # what they typed, and no --broker was given at all.
            raise click.BadParameter(f"{broker!r}: {exc}", param_hint=option) from None
        try:
            ctx.obj["broker"] = broker_address(broker, curve_key_file, curve_server_key_file)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        _check_hosts_resolve(option, urls)


def _broker_option_name(ctx) -> str:
    """How the user gave --broker: the option, or the environment variable."""
    from click.core import ParameterSource

    if ctx.get_parameter_source("broker") is ParameterSource.ENVIRONMENT:
        return "PLINTH_BROKER (environment variable)"
    return "--broker"


def _check_hosts_resolve(option: str, urls: str) -> None:
    """InvalidConfigError naming ``option``, the address and the host for the first
    tcp:// host of ``urls`` that does not resolve within CLI_BROKER_RESOLVE_TIMEOUT_MS.
    Before, the command waited out its request timeout and blamed the broker."""
    from plinth.client.connection import tcp_host_port

    for url in urls.split(","):
        address = tcp_host_port(url)
        if address is None:
            continue
        host = address[0]
        why = _resolve_failure(host)
        if why is not None:
            raise InvalidConfigError(f"{option} {url}: host {host!r} does not resolve ({why})")


def _resolve_failure(host: str) -> str | None:
    """Why ``host`` does not resolve, or None if it does. getaddrinfo cannot be cut
    short: it runs on a daemon thread that is left behind if it overruns."""
    import socket
    import threading

    outcome: list[str | None] = []

    def look_up() -> None:
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc.strerror or str(exc))

    thread = threading.Thread(target=look_up, name="plinth-resolve", daemon=True)
    thread.start()
    thread.join(limits.CLI_BROKER_RESOLVE_TIMEOUT_MS / 1000)
    if not outcome:
        return f"no answer within {limits.CLI_BROKER_RESOLVE_TIMEOUT_MS} ms"
    return outcome[0]


def _off_is_none(listen: str | None) -> str | None:
    """A listener's address option, where "off" (as --console-listen takes it) is none."""
    return None if listen == "off" else listen


def _kafka_listener_options(command):
    """The Kafka listener's options (address, auto-creation, TLS, SASL), shared by serve
    and router."""
    for option in reversed((
        click.option("--kafka-listen", envvar="PLINTH_KAFKA_LISTEN", show_envvar=True,
                     default=None, metavar="HOST:PORT",
                     help="Also serve Kafka's wire protocol here (Kafka's usual port is 9092), "
                          "so that Kafka clients and tools work unchanged. A non-loopback "
                          "address needs --kafka-tls-cert/--kafka-tls-key and "
                          "--kafka-sasl-users (or --allow-insecure). Default: off (as "
                          "'off' says too, for a templated command line)."),
        click.option("--kafka-advertised", envvar="PLINTH_KAFKA_ADVERTISED", show_envvar=True,
                     default=None, metavar="HOST:PORT",
                     help="The address Kafka clients are told to connect to (Kafka's "
                          "advertised.listeners). Default: the --kafka-listen address."),
        click.option("--kafka-auto-create-topics", is_flag=True, default=False,
                     help="Create a topic a Kafka client asks for that does not exist "
                          "(Kafka's auto.create.topics.enable), with 1 partition and the "
                          "default replication factor. Default: off."),
        click.option("--kafka-tls-cert", envvar="PLINTH_KAFKA_TLS_CERT", show_envvar=True,
                     default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="PEM certificate (chain) of the Kafka listener: every Kafka "
                          "connection is TLS (clients' SSL or SASL_SSL)."),
        click.option("--kafka-tls-key", envvar="PLINTH_KAFKA_TLS_KEY", show_envvar=True,
                     default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="The certificate's PEM private key (unencrypted)."),
        click.option("--kafka-sasl-users", envvar="PLINTH_KAFKA_SASL_USERS", show_envvar=True,
                     default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Users file (plinth kafka-user add): every Kafka connection logs "
                          "in with SASL PLAIN or SCRAM-SHA-256; the ACL names each user "
                          "User:NAME. Required beside --curve-secret-key."),
        click.option("--kafka-connections-max", envvar="PLINTH_KAFKA_CONNECTIONS_MAX",
                     show_envvar=True, default=None,
                     type=click.IntRange(limits.KAFKA_CONNECTIONS_MAX_MIN,
                                         limits.KAFKA_CONNECTIONS_MAX_MAX),
                     help="Kafka connections the listener keeps at most; a new one beyond "
                          "is closed at once (Kafka's max.connections). A quarter of them "
                          "may wait for their login, a tenth be one SASL user's. Default: "
                          f"{limits.KAFKA_CONNECTIONS_MAX:,}."),
    )):
        command = option(command)
    return command


@main.command()
@click.option("--data-dir", default="./plinth-data", show_default=True, type=click.Path(path_type=Path))
@click.option("--listen", default=limits.BROKER_URL_DEFAULT, show_default=True,
              callback=_listen_url, help="Address of the router socket.")
@click.option("--shards", type=click.IntRange(1, limits.SHARDS_MAX), default=None,
              help="Shard actors (default: one per CPU but one on each Ray node, at least "
                   "one; or as the data dir was created).")
@click.option("--ray-address", default=None, help="Join this Ray cluster instead of starting one.")
@click.option("--fsync-policy", type=click.Choice(["always", "interval", "never"]), default="always",
              show_default=True, help="always: acknowledge a produce only after fsync.")
@click.option("--fsync-interval-ms", type=click.IntRange(1, 3_600_000),
              default=limits.FSYNC_INTERVAL_MS_DEFAULT, show_default=True)
@click.option("--curve-secret-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The server's .key_secret: encrypt and authenticate clients.")
@click.option("--authorized-keys", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Directory of the .key files of clients allowed to connect.")
@click.option("--acl", "acl_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="JSON file of grants per client key (see router/acl.py).")
@click.option("--allow-insecure", is_flag=True,
              help="Allow plaintext on a non-loopback --listen address, and a Kafka "
                   "listener without TLS or SASL on a non-loopback --kafka-listen.")
@click.option("--cluster-name", default=None,
              help="Name of this broker in the Ray cluster; `plinth router` joins by it.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Prometheus metrics on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option("--internal-hop", type=click.Choice(["auto", "curve", "ipc"]), default="auto",
              show_default=True, help="How the router reaches the shards. curve: TCP, "
              "authenticated and encrypted with the cluster's keys (<data dir>/cluster.key_secret)."
              " ipc: Unix sockets in <data dir>/sockets (mode 0700), only the data dir's owner "
              "may connect, not encrypted; one machine only (not with --ray-address). "
              "auto: ipc with the embedded Ray, curve with --ray-address.")
@click.option("--default-replication-factor", type=int, default=None,
              help="Copies of each partition of a topic created without a factor (default: 1 "
                   f"when the shards run on one node, else min({limits.REPLICATION_FACTOR_DEFAULT_MULTI_NODE}"
                   ", their nodes).")
@click.option("--allow-replicas-on-one-node", is_flag=True,
              help="Allow a topic more replicas than there are nodes (several copies on one "
                   "node: for testing on one machine).")
@click.option("--auto-leader-rebalance/--no-auto-leader-rebalance", default=True,
              show_default=True,
              help="Give partitions back to their preferred leaders (handed over: nothing "
                   "acknowledged is cut) where more than 10% of a shard's are led elsewhere "
                   "(Kafka's auto.leader.rebalance.enable).")
@click.option("--leader-imbalance-check-interval-s", type=_FiniteFloatRange(1, 86_400),
              default=limits.LEADER_REBALANCE_INTERVAL_S, show_default=True,
              help="How often the auto leader rebalance looks (Kafka's "
                   "leader.imbalance.check.interval.seconds).")
@click.option("--offsets-replication-factor",
              type=click.IntRange(1, limits.REPLICATION_FACTOR_MAX), default=None,
              help="Copies of the consumer groups' committed offsets (Kafka's "
                   "offsets.topic.replication.factor; default: the default replication factor).")
@click.option("--direct-clients", type=click.Choice(["auto", "off"]), default="auto",
              show_default=True, help="Let clients produce and fetch straight at the leader "
              "shard (plain TCP on 127.0.0.1), skipping the router hop. auto: only with a "
              "plaintext loopback --listen and shards on a loopback Ray node (the embedded "
              "Ray, or a local-only cluster); never with CurveZMQ or an ACL, whose checks "
              "only the router makes. off: everything through the router.")
@click.option("--tier-url", envvar="PLINTH_TIER_URL", show_envvar=True, default=None, metavar="URL",
              help="Object storage for tiered storage (topics with remote.storage.enable=true), "
                   "used by every shard on every node: s3://bucket/prefix, gs://bucket/prefix, "
                   "az://container/prefix or file:///path (one machine). Credentials come "
                   "from each cloud's standard environment, on every node. Once a topic is "
                   "tiered the server starts only with the same store. Default: none "
                   "(remote.storage.enable=true is refused).")
@click.option("--tier-cache-bytes", envvar="PLINTH_TIER_CACHE_BYTES", show_envvar=True,
              type=click.IntRange(limits.TIER_CACHE_BYTES_MIN, limits.TIER_CACHE_BYTES_MAX),
              default=limits.TIER_CACHE_BYTES_DEFAULT, show_default=True,
              help="Local disk each shard may use for cached chunks of remote segments.")
@click.option("--tier-store-take-over", is_flag=True, default=False,
              help="Make this data dir the owner of its objects in the --tier-url store although "
                   "another copy of it (a newer one) has claimed them since it last ran: for a "
                   "backup restored on purpose. The other copy then deletes nothing there. "
                   "Never while that copy runs (refused).")
@_kafka_listener_options
@click.option("--console-listen", envvar="PLINTH_CONSOLE_LISTEN", show_envvar=True,
              default=limits.CONSOLE_LISTEN_DEFAULT, show_default=True, metavar="HOST:PORT|off",
              help="Start the web console (plinth console) here, as a child process; off: "
                   "none. Beyond loopback run plinth console yourself, with its login options.")
@click.option("--data-dir-free-bytes-min", type=click.IntRange(0, 1 << 50),
              default=limits.DATA_DIR_FREE_BYTES_MIN, show_default=True,
              help="Refuse to start with less free space than this on the data dir's file "
                   "system (Ray's session files and the logs need some). Lower it to start "
                   "a broker whose disk its own records filled, to delete topics or records.")
@click.option("--produce-free-bytes-min", type=click.IntRange(0, limits.PRODUCE_FREE_BYTES_MIN_MAX),
              default=limits.PRODUCE_FREE_BYTES_MIN_DEFAULT, show_default=True,
              help="Each shard refuses produces that would leave less free than this on its "
                   "data dir's file system (producers retry until their delivery timeout), "
                   "so that deleting topics or records can still free a full disk "
                   "(Redpanda's storage_min_free_bytes). 0: no reserve.")
def serve(data_dir, listen, shards, ray_address, fsync_policy, fsync_interval_ms,
          curve_secret_key, authorized_keys, acl_file, allow_insecure, cluster_name,
          metrics_port, metrics_host, internal_hop, default_replication_factor,
          allow_replicas_on_one_node, auto_leader_rebalance, leader_imbalance_check_interval_s,
          offsets_replication_factor,
          direct_clients, tier_url, tier_cache_bytes, tier_store_take_over, kafka_listen,
          kafka_advertised, kafka_auto_create_topics,
          kafka_tls_cert, kafka_tls_key, kafka_sasl_users, kafka_connections_max, console_listen,
          data_dir_free_bytes_min, produce_free_bytes_min):
    """Run the broker until SIGTERM or Ctrl-C."""
    from plinth.server import ServeOptions, serve as run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    options = ServeOptions(data_dir=data_dir, listen=listen, shards=shards, ray_address=ray_address,
                           fsync_policy=fsync_policy, fsync_interval_ms=fsync_interval_ms,
                           curve_secret_key=curve_secret_key, authorized_keys=authorized_keys,
                           acl_file=acl_file, allow_insecure=allow_insecure,
                           cluster_name=cluster_name, metrics_port=metrics_port,
                           metrics_host=metrics_host, internal_hop=internal_hop,
                           default_replication_factor=default_replication_factor,
                           allow_replicas_on_one_node=allow_replicas_on_one_node,
                           auto_leader_rebalance=auto_leader_rebalance,
                           leader_imbalance_check_interval_s=leader_imbalance_check_interval_s,
                           offsets_replication_factor=offsets_replication_factor,
                           direct_clients=direct_clients, tier_url=tier_url,
                           tier_cache_bytes=tier_cache_bytes,
                           tier_store_take_over=tier_store_take_over,
                           kafka_listen=_off_is_none(kafka_listen),
                           kafka_advertised=kafka_advertised,
                           kafka_auto_create_topics=kafka_auto_create_topics,
                           kafka_tls_cert=kafka_tls_cert, kafka_tls_key=kafka_tls_key,
                           kafka_sasl_users=kafka_sasl_users,
                           kafka_connections_max=kafka_connections_max,
                           console_listen=_off_is_none(console_listen),
                           data_dir_free_bytes_min=data_dir_free_bytes_min,
                           produce_free_bytes_min=produce_free_bytes_min)
    sys.exit(run(options, ready=lambda line: click.echo(line, err=False) or sys.stdout.flush()))


@main.command()
@click.option("--ray-address", default=None,
              help="The Ray cluster the broker runs in (HOST:PORT of its head, or auto). "
                   "Without it: the Ray of the plinth serve on --data-dir, on this machine.")
@click.option("--cluster-name", default=None,
              help="The broker's --cluster-name (needed with --ray-address).")
@click.option("--listen", default=limits.BROKER_URL_DEFAULT, show_default=True,
              callback=_listen_url)
@click.option("--curve-secret-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None)
@click.option("--authorized-keys", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None)
@click.option("--acl", "acl_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None)
@click.option("--allow-insecure", is_flag=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option("--cluster-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The server's <data dir>/cluster.key_secret: only it lets "
              "the router reach the shards (default: read it from --data-dir, else ask the "
              "broker through Ray).")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="The server's data dir, to read cluster.key_secret from "
              "(and, without --ray-address, where its own Ray is: ray.address).")
@click.option("--tier-url", envvar="PLINTH_TIER_URL", show_envvar=True, default=None, metavar="URL",
              help="The object store the broker is expected to tier to. A router reads "
                   "nothing from object storage (the shards do, with plinth serve's "
                   "--tier-url); given, the router starts only if the broker's store is "
                   "this one (bucket and prefix; credentials may differ), so that a deploy "
                   "config setting PLINTH_TIER_URL on every node fails fast when they diverge.")
@_kafka_listener_options
def router(ray_address, cluster_name, listen, curve_secret_key, authorized_keys, acl_file,
           allow_insecure, metrics_port, metrics_host, cluster_key_file, data_dir, tier_url,
           kafka_listen, kafka_advertised, kafka_auto_create_topics, kafka_tls_cert,
           kafka_tls_key, kafka_sasl_users, kafka_connections_max):
    """Run one more router for a running broker (e.g. one per node), until SIGTERM."""
    from plinth.server import RouterOptions, run_router

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    options = RouterOptions(ray_address=ray_address, cluster_name=cluster_name, listen=listen,
                            curve_secret_key=curve_secret_key, authorized_keys=authorized_keys,
                            acl_file=acl_file, allow_insecure=allow_insecure,
                            metrics_port=metrics_port, metrics_host=metrics_host,
                            cluster_key_file=cluster_key_file, data_dir=data_dir,
                            tier_url=tier_url, kafka_listen=_off_is_none(kafka_listen),
                            kafka_advertised=kafka_advertised,
                            kafka_auto_create_topics=kafka_auto_create_topics,
                            kafka_tls_cert=kafka_tls_cert, kafka_tls_key=kafka_tls_key,
                            kafka_sasl_users=kafka_sasl_users,
                            kafka_connections_max=kafka_connections_max)
    sys.exit(run_router(options, ready=lambda line: click.echo(line) or sys.stdout.flush()))


@main.command()
@click.option("--broker", default=None, help="Router address (default: plinth's --broker).")
@click.option("--listen", default=limits.CONSOLE_LISTEN_DEFAULT, show_default=True,
              metavar="HOST:PORT", help="Where to serve the console. Beyond loopback it needs "
              "--auth-file and --tls-cert/--tls-key.")
@click.option("--auth-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Tokens and users allowed in, a line each "
                                 "(plinth console-auth makes the lines).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="PEM certificate (chain): serve HTTPS.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The certificate's PEM private key.")
@click.option("--curve-key-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The console's own .key_secret, for a CurveZMQ broker (its ACL applies).")
@click.option("--curve-server-key-file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="The broker's public .key file.")
@click.option("--sample-interval-s", type=_FiniteFloatRange(0.1, 60),
              default=limits.CONSOLE_SAMPLE_INTERVAL_S, show_default=True,
              help="How often the live charts ask the broker (only while a browser watches).")
@click.option("--exit-on-stdin-eof", is_flag=True, hidden=True,
              help="Stop when stdin ends (plinth serve's child).")
@click.pass_context
def console(ctx, broker, listen, auth_file, tls_cert, tls_key, curve_key_file,
            curve_server_key_file, sample_interval_s, exit_on_stdin_eof):
    """Serve the web console for a running broker, until SIGTERM or Ctrl-C."""
    from plinth.client.console.child import CHILD_LOG_FORMAT
    from plinth.client.console.config import ConsoleConfig
    from plinth.client.console.runner import run as run_console

    # Serve's child writes no time of its own: serve logs each line again, with its.
    logging.basicConfig(level=logging.INFO, format=CHILD_LOG_FORMAT if exit_on_stdin_eof
                        else "%(asctime)s %(levelname)s %(name)s %(message)s")
    config = ConsoleConfig(broker=broker or ctx.obj["broker"], listen=listen, auth_file=auth_file,
                           tls_cert=tls_cert, tls_key=tls_key,
                           curve_key_file=curve_key_file or ctx.obj["curve_key_file"],
                           curve_server_key_file=(curve_server_key_file
                                                  or ctx.obj["curve_server_key_file"]),
                           request_timeout_ms=ctx.obj["request_timeout_ms"],
                           sample_interval_s=sample_interval_s)
    sys.exit(run_console(config, exit_on_stdin_eof=exit_on_stdin_eof,
                         ready=lambda line: click.echo(line) or sys.stdout.flush()))


@main.group("console-auth")
def console_auth():
    """Lines for the console's --auth-file (append them: >> console.auth)."""


@console_auth.command("token")
@click.argument("name")
def console_auth_token(name):
    """A new bearer token for NAME: its line on stdout, and the token itself on stderr
    (shown once, stored nowhere; a client sends 'Authorization: Bearer TOKEN')."""
    from plinth.client.console.auth import token_entry

    token, line = token_entry(name)
    # The token to stderr: `>> console.auth` must capture the line, not the secret
    click.echo(f"the token for {name} (give it to the client; it is stored nowhere): {token}",
               err=True)
    click.echo(line)


@console_auth.command("user")
@click.argument("name")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from stdin's first line instead of a prompt.")
def console_auth_user(name, password_stdin):
    """A browser login (HTTP basic auth) for NAME: its line, the password scrypt-hashed."""
    from plinth.client.console.auth import user_entry, validate_name

    validate_name(name)          # before the prompt, not after two passwords
    click.echo(user_entry(name, _password(password_stdin, prompt_to_stderr=True)))


def _password(password_stdin: bool, *, prompt_to_stderr: bool = False) -> str:
    """The password: stdin's first line with --password-stdin, else asked twice at the
    terminal. UserError without a terminal: getpass then read stdin with a warning
    per prompt and click said only "Aborted!"."""
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not _has_terminal():
        raise UserError("a password prompt needs a terminal, and there is none; pass "
                        "--password-stdin to read the password from stdin's first line")
    return click.prompt("password", hide_input=True, confirmation_prompt=True,
                        err=prompt_to_stderr)


def _has_terminal() -> bool:
    """Whether a hidden prompt can be shown: getpass reads /dev/tty (the controlling
    terminal) whatever stdin is, and falls back to stdin only without one."""
    import os

    if sys.stdin.isatty():
        return True
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


# A key pair's NAME: a file name's characters only (no '/', so nothing is written
# outside --out; not starting with '.' or '-', so no hidden file and no option), short
# enough that NAME.key_secret fits a file name (255 bytes on Linux).
_KEY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_KEY_NAME_BYTES_MAX = 255 - len(".key_secret")


def _key_name(ctx, param, name: str) -> str:
    if not _KEY_NAME.fullmatch(name) or len(name) > _KEY_NAME_BYTES_MAX:
        raise click.BadParameter(
            f"{name!r} is not a key name: 1 to {_KEY_NAME_BYTES_MAX} ASCII letters, digits, "
            f"'.', '_' and '-', not starting with '.' or '-'")
    return name


@main.command()
@click.argument("name", callback=_key_name)
@click.option("--out", "out_dir", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True,
              help="Replace NAME's key pair if it exists (whoever holds its old public key, "
                   "a server's clients for a server key, can then no longer connect).")
def keygen(name, out_dir, force):
    """Write a CurveZMQ key pair: NAME.key (public, share it) and NAME.key_secret.
    An existing pair is kept unless --force."""
    import os
    import tempfile

    import zmq.auth

    from plinth.durable_files import fsync_directory
    from plinth.server import option_os_errors

    existing = [f for f in (out_dir / f"{name}.key", out_dir / f"{name}.key_secret") if f.exists()]
    if existing and not force:
        raise UserError(f"{' and '.join(map(str, existing))} "
                        f"{'exists' if len(existing) == 1 else 'exist'} already: pass --force to "
                        f"replace the key pair (whoever holds its public key can then no "
                        f"longer connect)")
    # As mkdir without -p: the last level only. A typo in a parent (as root, too) made
    # a whole tree silently; ssh-keygen makes no directory at all.
    if not out_dir.parent.is_dir():
        raise InvalidConfigError(f"--out {out_dir}: its parent directory {out_dir.parent} "
                                 f"does not exist; create it first")
    with option_os_errors("--out", out_dir):
        out_dir.mkdir(exist_ok=True)
        # Written in a directory only this user may enter (mkdtemp's 0700), made 0600
        # there, then renamed into place: pyzmq writes with the umask's mode, and the
        # secret was readable by anyone until it was chmodded.
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".plinth-keygen-") as private:
            made = zmq.auth.create_certificates(private, name)
            os.chmod(made[1], 0o600)
            public_file, secret_file = (out_dir / Path(f).name for f in made)
            for source, target in zip(made, (public_file, secret_file)):
                os.replace(source, target)
        fsync_directory(out_dir)
    click.echo(f"public key: {public_file}\nsecret key: {secret_file}")


@main.group("kafka-user")
def kafka_user():
    """The Kafka listener's SASL users file (--kafka-sasl-users)."""


@kafka_user.command("add")
@click.argument("users_file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("name")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from stdin's first line instead of a prompt.")
@click.option("--iterations", type=click.IntRange(limits.KAFKA_SCRAM_ITERATIONS_MIN,
                                                  limits.KAFKA_SCRAM_ITERATIONS_MAX),
              default=limits.KAFKA_SCRAM_ITERATIONS_DEFAULT, show_default=True,
              help="SCRAM-SHA-256 iterations (PBKDF2 rounds).")
def kafka_user_add(users_file, name, password_stdin, iterations):
    """Add or replace user NAME in USERS_FILE (created, mode 0600): salted SCRAM-SHA-256
    credentials, never the password. The user may log in with SCRAM-SHA-256, or with
    PLAIN on a listener with TLS or on loopback (PLAIN sends the password itself); a
    running listener reads the file at its start."""
    from plinth.router.kafka.sasl_users import add_user
    from plinth.server import option_os_errors

    password = _password(password_stdin)
    with option_os_errors("USERS_FILE", users_file):   # e.g. a directory we may not write
        add_user(users_file, name, password, iterations)
    click.echo(f"user {name!r} written to {users_file}; name it User:{name} in the ACL")


@main.command()
@json_option
@click.pass_context
def status(ctx, as_json):
    """Nodes, shards (node, process id, partitions, bytes, records/s and MB/s produced and
    fetched), each shard's disk (free, total, the reserve below which it refuses
    produces), routers, and how many partitions
    are under-replicated (a replica out of sync) or offline (no leader serving)."""
    with _admin(ctx) as admin:
        info = admin.status()
    if as_json:
        echo_json(status_json(info))
        return
    click.echo(f"nodes\n  {'name':<16} {'node id':<12}  {'address':<16} state")
    for node_id, address, alive in info.nodes:
        name = info.node_names.get(node_id, "")
        click.echo(f"  {name:<16} {node_id[:12]:<12}  {address:<16} {'alive' if alive else 'DEAD'}")
    width = _column_width([shard.address for shard in info.shards], 24)   # ipc:// paths are long
    click.echo(f"shards\n  {'shard':<10} {'state':<12} {'node':<16} {'pid':>8} "
               f"{'address':<{width}} "
               f"{'partitions':>10} {'bytes':>14} {'records/s':>11} {'MB/s':>8} "
               f"{'records/s out':>13} {'MB/s out':>8}")
    for shard in info.shards:
        state = ("up" if shard.alive else "DOWN") + (" draining" if shard.draining else "")
        # its ray::ShardActor process on that node (a DOWN one still in its constructor:
        # the process that said it starts the shard); "-": not known
        pid = shard.pid or "-"
        click.echo(f"  {shard.shard_id:<10} {state:<12} {shard.node:<16} {pid:>8} "
                   f"{shard.address:<{width}} {shard.partitions:>10} {_measured(shard)}")
    _echo_draining(info.shards)
    _echo_down(info.shards)
    direct = [shard for shard in info.shards if shard.direct_address]
    if direct:   # where clients may produce and fetch without the router
        width = _column_width([shard.direct_address for shard in direct], 24)
        click.echo(f"direct sockets\n  {'shard':<10} {'address':<{width}} {'requests direct':>16} "
                   f"{'via router':>12}")
        for shard in direct:   # a DOWN shard's counts are not known: "-", not 0
            direct_count, via_router = ((shard.requests_direct, shard.requests_via_router)
                                        if shard.alive else ("-", "-"))
            click.echo(f"  {shard.shard_id:<10} {shard.direct_address:<{width}} "
                       f"{direct_count:>16} {via_router:>12}")
    _echo_tiered_shards(info.shards)
    if info.tier_claim:   # whether this broker may delete in its store (store_claim.py)
        click.echo(f"tier store claim\n  {info.tier_claim}")
    _echo_disks(info.shards)
    click.echo("routers")
    for address, node in info.routers:
        click.echo(f"  {address}  on {node}")
    click.echo(f"partitions\n  under-replicated {info.under_replicated_partitions}  "
               f"offline {info.offline_partitions}")


def _echo_disks(shards: list) -> None:
    """``plinth status``'s disks: each answering shard's file system, and whether it
    takes produces (it refuses those that would leave less than its reserve free, and
    those to partitions whose last append its disk refused)."""
    known = [shard for shard in shards if shard.alive and shard.disk_total_bytes]
    if not known:
        return
    click.echo(f"disks\n  {'shard':<10} {'free bytes':>16} {'free %':>7} {'total bytes':>16} "
               f"{'reserve bytes':>14}  produces")
    for shard in known:
        free_pct = 100 * shard.disk_free_bytes / shard.disk_total_bytes
        produces = ("REFUSED (free is under the reserve)"
                    if shard.disk_free_bytes < shard.disk_reserve_bytes else "taken")
        if shard.partitions_appends_failing:   # the disk itself refuses: reserve or not
            produces = (f"REFUSED (the disk refused the last append to "
                        f"{counted(shard.partitions_appends_failing, 'partition')}: see the "
                        f"shard's log)")
        click.echo(f"  {shard.shard_id:<10} {shard.disk_free_bytes:>16} {free_pct:>6.1f}% "
                   f"{shard.disk_total_bytes:>16} {shard.disk_reserve_bytes:>14}  {produces}")


def _echo_tiered_shards(shards: list) -> None:
    """``plinth status``'s tiered storage table: each uploading shard's remote bytes,
    marked "?" (and said below) while it has not listed some partitions' remote logs:
    they may lack segments in the store (a new leader, the store down)."""
    tiered = [shard for shard in shards if shard.remote_bytes or shard.upload_lag_bytes
              or shard.upload_errors or shard.remote_partitions_not_listed]
    if not tiered:
        return
    click.echo(f"tiered storage\n  {'shard':<10} {'remote bytes':>14} {'upload lag bytes':>17} "
               f"{'lag s':>8} {'upload errors':>14}")
    for shard in tiered:
        remote = f"{shard.remote_bytes}{'?' if shard.remote_partitions_not_listed else ''}"
        click.echo(f"  {shard.shard_id:<10} {remote:>14} "
                   f"{shard.upload_lag_bytes:>17} {shard.upload_lag_s:>8.1f} "
                   f"{shard.upload_errors:>14}")
    for shard in tiered:
        if shard.remote_partitions_not_listed:
            click.echo(f"  ? {shard.shard_id} has not listed object storage for "
                       f"{counted(shard.remote_partitions_not_listed, 'partition')} yet: its "
                       f"remote bytes may lack their segments (plinth topic describe says why)")


@main.command()
@click.option("--data-dir", default="./plinth-data", show_default=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path))
def check(data_dir):
    """Read every partition log of a stopped broker's data dir whole, checking each
    entry's CRC, and compare the logs with the shards' manifests, and those with
    metadata.json (topic ids, topics), and try each file and directory as the broker
    writes it (one immutable, append-only, read-only or not the user's is damage);
    say what is damaged, and whether a start upgrades the data dir's format (which
    older Plinth builds then refuse). Changes no data (it takes the data dir's
    lock, whose file says who holds it).
    Exit status 1 if anything is damaged, 2 if the check is refused (a server holds
    the data dir, its metadata or a manifest cannot be read, or a newer Plinth wrote
    it)."""
    try:
        found = _checked_data_dir(data_dir)
    except PlinthError as exc:
        _exit_with_error(exc, 2)
    except OSError as exc:   # a file the check must read or lock cannot be: say which
        click.echo(f"error: {type(exc).__name__}: {exc.filename or data_dir}: "
                   f"{exc.strerror or exc} (errno {exc.errno}); nothing was checked",
                   err=True)
        sys.exit(2)
    for line in found.problems:
        click.echo(f"DAMAGED {line}")
    for check in found.partitions:
        for line in check.problems:
            click.echo(f"DAMAGED {line}")
        for line in check.notes:
            click.echo(f"note    {line}")
    for line in found.notes:
        click.echo(f"note    {line}")
    from plinth.control.shard_set import SHARDS_DIR

    checks = found.partitions
    click.echo(f"checked {counted(len(checks), 'partition log')} in {data_dir / SHARDS_DIR}: "
               f"{counted(sum(c.segments for c in checks), 'segment')}, "
               f"record batches valid: {sum(c.entries_valid for c in checks):,} "
               f"({sum(c.bytes_valid for c in checks):,} bytes); "
               f"{found.damaged} damaged")
    if found.damaged:
        sys.exit(1)


def _checked_data_dir(data_dir: Path):
    """``check``'s work under the data dir's lock: a ShardsCheck (log_check.py), or
    PlinthError if the check is refused."""
    from plinth.control.data_dir_check import (disagreements, format_notes,
                                               load_checked_metadata, missing_shard_directories,
                                               tier_notes)
    from plinth.control.metadata import METADATA_FILE
    from plinth.control.shard_set import SHARDS_DIR
    from plinth.data_dir_lock import DataDirLock
    from plinth.shards.log_check import ShardsCheck, check_shards_directory, read_manifests
    from plinth.shards.log_check_writable import read_only_mount, unwritable_lines
    from plinth.shards.shard_handle import MANIFEST_FILE

    shards_dir = data_dir / SHARDS_DIR
    if not (data_dir / METADATA_FILE).exists() and not shards_dir.is_dir():
        raise InvalidConfigError(f"{data_dir} holds no Plinth data (no {METADATA_FILE}, no "
                                 f"{SHARDS_DIR}/): pass the --data-dir plinth serve uses")
    lock = DataDirLock(data_dir)
    lock.acquire_to_read()   # a running server's active segments change under the check
    try:
        # The data dir's own: metadata.json is replaced by a rename into the data dir
        unwritable = unwritable_lines([data_dir, data_dir / METADATA_FILE])
        read_only = ([f"{data_dir}: its file system is mounted read-only: a broker cannot "
                      f"start on it until it is mounted read-write (whether it could write "
                      f"each file is not checked)"] if read_only_mount(data_dir)
                     else _start_space_notes(data_dir))
        if not shards_dir.is_dir():
            metadata = load_checked_metadata(data_dir, {})
            return ShardsCheck(problems=missing_shard_directories(data_dir / METADATA_FILE,
                                                                  metadata) + unwritable,
                               notes=format_notes(data_dir / METADATA_FILE, metadata)
                               + read_only)
        read_only.extend(_shard_disk_notes(data_dir, shards_dir))
        manifests = read_manifests(shards_dir)
        by_path = {shard_dir / MANIFEST_FILE: manifest
                   for shard_dir, manifest in manifests.found.items()}
        metadata = load_checked_metadata(data_dir, by_path)
        found = check_shards_directory(shards_dir, manifests)
        # Where metadata.json and a manifest disagree, a start sets a log aside or
        # serves none of it: said as damage
        disagreeing = disagreements(data_dir / METADATA_FILE, metadata, by_path)
        found.problems.extend(disagreeing.damaged)
        found.problems.extend(missing_shard_directories(data_dir / METADATA_FILE, metadata))
        found.problems.extend(unwritable)
        found.notes.extend(disagreeing.notes)
        found.notes.extend(format_notes(data_dir / METADATA_FILE, metadata))
        found.notes.extend(tier_notes(metadata))
        found.notes.extend(read_only)
        return found
    finally:
        lock.release()


def _start_space_notes(data_dir: Path) -> list[str]:
    """``check``'s note if the data dir's file system has less free than a start asks
    by default (DATA_DIR_FREE_BYTES_MIN): ``plinth serve`` refuses to start there,
    where the check said only "0 damaged" (tester T-fd, session 45). Not damage."""
    from plinth.errors import StorageError
    from plinth.server import check_free_space

    try:
        check_free_space(data_dir, limits.DATA_DIR_FREE_BYTES_MIN)
    except StorageError as exc:
        return [f"plinth serve refuses to start here: {exc}"]
    return []


def _shard_disk_notes(data_dir: Path, shards_dir: Path) -> list[str]:
    """``check``'s note for each shard directory on a file system of its own (a disk
    mounted on ``shards/shard-N``) with less free than a shard keeps free by default
    (PRODUCE_FREE_BYTES_MIN_DEFAULT): its produces would be refused. The data dir's
    own file system has its note (``_start_space_notes``). Not damage."""
    import shutil

    data_dir_device = data_dir.stat().st_dev
    notes = []
    for shard_dir in sorted(p for p in shards_dir.iterdir() if p.is_dir()):
        if shard_dir.stat().st_dev == data_dir_device:
            continue
        free_bytes = shutil.disk_usage(shard_dir).free
        if free_bytes < limits.PRODUCE_FREE_BYTES_MIN_DEFAULT:
            notes.append(f"{shard_dir} is on a file system of its own with {free_bytes} bytes "
                         f"free, under the {limits.PRODUCE_FREE_BYTES_MIN_DEFAULT} a shard "
                         f"keeps free by default (--produce-free-bytes-min): it would refuse "
                         f"produces; free some, or give that disk more room")
    return notes


def _measured(shard) -> str:
    """A shard's bytes and rates columns; "-" in each for a DOWN shard, which did not
    answer: its 0s read as an empty, idle shard (one showed 0 bytes holding 1,148,440)."""
    cells = [(shard.size_bytes, 14, "d"), (shard.records_per_s, 11, ".0f"),
             (shard.bytes_per_s / 1e6, 8, ".2f"), (shard.records_out_per_s, 13, ".0f"),
             (shard.bytes_out_per_s / 1e6, 8, ".2f")]
    return " ".join(f"{format(value, spec) if shard.alive else '-':>{width}}"
                    for value, width, spec in cells)


def _column_width(values: list[str], at_least: int) -> int:
    """A left-aligned column's width: its longest value, and at least ``at_least``."""
    return max([at_least, *map(len, values)])


@main.group()
def shards():
    """Change the number of shards, or move one to another node."""


# ignore_unknown_options: "-1" reaches COUNT's range check, not "No such option '-1'"
@shards.command("add", context_settings={"ignore_unknown_options": True})
@click.argument("count", type=click.IntRange(1, limits.SHARDS_MAX))
@click.pass_context
def shards_add(ctx, count):
    """Add COUNT shards. Partitions they now own take new writes there at once; their
    older records stay where they are and are read from there. No data is copied."""
    with _admin(ctx) as admin:
        moves = admin.add_shards(count)
    _echo_moves(moves)
    click.echo(f"added {counted(count, 'shard')}; {_moved(moves)}")


# ignore_unknown_options: "-1" reaches COUNT's range check, not "No such option '-1'"
@shards.command("remove", context_settings={"ignore_unknown_options": True})
@click.argument("count", type=click.IntRange(1, limits.SHARDS_MAX))
@click.pass_context
def shards_remove(ctx, count):
    """Remove the COUNT newest shards. Their partitions take new writes on the others at
    once, their consumer groups move with their committed offsets; their older records
    stay where they are and are read from there until deleted, or, for a tiered topic,
    until they are in object storage, where the partitions' owners read them. Then the
    shard retires. No data is copied. Prints why each removed shard still drains."""
    with _admin(ctx) as admin:
        moves = admin.remove_shards(count)
        shards_now = admin.status().shards
    _echo_moves(moves)
    click.echo(f"removed {counted(count, 'shard')}; {_moved(moves)}")
    _echo_draining(shards_now)   # nothing when every removed shard retired at once


@shards.command("move")
@click.argument("shard")
@click.option("--node", required=True,
              help="The node to re-create it on: its name as `plinth status` prints it (or "
                   "its node id).")
@click.option("--allow-replicas-on-one-node", is_flag=True,
              help="Allow a node that already holds a replica of one of its partitions.")
@click.option("--accept-data-loss", is_flag=True,
              help="Move it even though some partitions have no other copy: they come back "
                   "empty.")
@click.option("--force", is_flag=True,
              help="Move it even though its node is alive and it serves.")
@click.pass_context
def shards_move(ctx, shard, node, allow_replicas_on_one_node, accept_data_loss, force):
    """Re-create SHARD on NODE after its node was lost for good (as Kafka's partition
    reassignment off a decommissioned broker): it starts there on what that node's disk
    holds (nothing, for a new node), and each of its replicas is rebuilt from its
    partition's leader and rejoins the in-sync set, so the replication factor is
    restored. `plinth topic describe` shows the in-sync replicas coming back."""
    with _admin(ctx) as admin:
        move = admin.move_shard(shard, node, allow_replicas_on_one_node=allow_replicas_on_one_node,
                                accept_data_loss=accept_data_loss, force=force)
    click.echo(f"moved {move.shard} from node {move.from_node or '?'} to node {move.to_node}, "
               f"listening at {move.address}")
    click.echo(f"{counted(len(move.repairing), 'replica')} rebuilding from their leaders: "
               + (", ".join(f"{t}-{p}" for t, p in move.repairing) or "none"))
    if move.emptied:
        click.echo(f"{counted(len(move.emptied), 'partition')} emptied (no other copy): "
                   + ", ".join(f"{t}-{p}" for t, p in move.emptied))


def _echo_down(shards) -> None:
    """Print why each DOWN shard is down, where the controller knows (nothing if none)."""
    down = [shard for shard in shards if not shard.alive and shard.down_reason]
    if down:
        click.echo("down shards")
        for shard in down:
            click.echo(f"  {shard.shard_id:<10} {shard.down_reason}")


def _echo_draining(shards) -> None:
    """Print why each draining shard has not retired yet (nothing if none drains)."""
    draining = [shard for shard in shards if shard.draining]
    if draining:
        click.echo("draining (a removed shard retires once it serves nothing: its tiered "
                   "topics' ranges are in object storage, the others' are deleted)")
        for shard in draining:
            click.echo(f"  {shard.shard_id:<10} {shard.draining_reason or 'not looked at yet'}")


def _echo_moves(moves) -> None:
    """One line per partition whose writes moved; a replicated partition that keeps its
    leader but gets a new replica set (its writes move all the same: to the new set)
    says so, rather than "shard-2 -> shard-2"."""
    for topic, partition, from_shard, to_shard, offset in moves:
        if from_shard == to_shard:
            click.echo(f"{topic}-{partition}: a new replica set, still led by {to_shard}, "
                       f"from offset {offset}")
        else:
            click.echo(f"{topic}-{partition}: {from_shard} -> {to_shard} from offset {offset}")


def _moved(moves) -> str:
    """How many partitions' writes moved, and how many of them to a new replica set
    under the same leader."""
    same_leader = sum(1 for move in moves if move[2] == move[3])
    kept = f" ({same_leader} of them to a new replica set, led by the same shard)" \
        if same_leader else ""
    return f"the writes of {counted(len(moves), 'partition')} moved{kept}"


# --- topic ---------------------------------------------------------------------

@main.group()
def topic():
    """Create, list, describe and delete topics."""




@topic.command("create")
@click.argument("name")
@click.option("--partitions", type=int, default=1, show_default=True)
@click.option("--replication-factor", type=int, default=None,
              help="Copies of each partition, on distinct shards (default: the server's "
                   "--default-replication-factor).")
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE",
              help="Topic config, e.g. segment.bytes=1048576 or min.insync.replicas=2 "
                   "(repeatable).")
@click.pass_context
def topic_create(ctx, name, partitions, replication_factor, configs):
    with _admin(ctx) as admin:
        info = admin.create_topic(name, partitions, replication_factor,
                                  config=_parse_config(configs))
    factor = ("the server's default replication factor" if replication_factor is None
              else f"replication factor {replication_factor}")
    click.echo(f"created topic {info.name} with {counted(info.partitions, 'partition')}, "
               f"{factor}")


@topic.command("alter")
@click.argument("name")
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE",
              help="Topic config to change, e.g. retention.ms=3600000 (repeatable).")
@click.option("--delete-config", "deleted", multiple=True, metavar="KEY",
              help="Set KEY back to its default, as kafka-configs --delete-config "
                   "(repeatable).")
@click.option("--partitions", type=int, default=None,
              help="Grow the topic to this many partitions (never fewer than it has).")
@click.pass_context
def topic_alter(ctx, name, configs, deleted, partitions):
    if not configs and not deleted and partitions is None:
        raise click.UsageError("give --config KEY=VALUE, --delete-config KEY or "
                               "--partitions N")
    config = _parse_config(configs)
    with _admin(ctx) as admin:
        # The config first: the broker checks it as it applies it (there is no
        # validate-only alter), so a bad one fails before the topic grows, which
        # cannot be undone. The growth's own checks run before either, so that a
        # count the topic cannot grow to does not leave the config changed.
        if partitions is not None and (configs or deleted):
            topics.validate_partition_growth(name, admin.describe_topic(name).partitions,
                                             partitions)
        if configs or deleted:
            info = admin.alter_topic(name, config, delete_config=deleted)
            click.echo(f"altered topic {info.name}: " +
                       " ".join(f"{k}={v}" for k, v in sorted(info.config.items())))
        if partitions is not None:
            info = admin.create_partitions(name, partitions)
            click.echo(f"topic {info.name} has {counted(info.partitions, 'partition')}")


def _parse_config(configs) -> dict[str, str]:
    config = {}
    for item in configs:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--config")
        config[key] = value
    return config


@topic.command("list")
@click.option("--prefix", default="", help="Only the topics whose names start with it.")
@click.option("--limit", type=click.IntRange(1, limits.ADMIN_LIST_PAGE_NAMES_MAX), default=None,
              help="At most this many names, a page of the list (1 to "
                   f"{limits.ADMIN_LIST_PAGE_NAMES_MAX}); with --after, the next page.")
@click.option("--after", default="", help="Only the names after it (the last of a page).")
@json_option
@click.pass_context
def topic_list(ctx, prefix, limit, after, as_json):
    """Topic names, sorted; with --prefix, --limit or --after, one page of them, and a
    last line saying how to ask for the next page if more follow."""
    with _admin(ctx) as admin:
        if not (prefix or after or limit):
            names = admin.list_topics()
            if as_json:   # no page asked: no next one
                echo_json(names_json("topics", names, None))
                return
            for name in names:
                click.echo(name)
            return
        echo_pages(admin.list_topics_page, prefix, after, limit, "topic list", as_json)


@topic.command("describe")
@click.argument("name")
@json_option
@click.pass_context
def topic_describe(ctx, name, as_json):
    with _admin(ctx) as admin:
        info = admin.describe_topic(name)
    if as_json:
        echo_json(topic_json(info))
        return
    config = " ".join(f"{k}={v}" for k, v in sorted(every_config(info).items()))
    factor = replication_factor(info)
    # The topic id right after the name, as kafka-topics --describe prints TopicId: a
    # topic deleted and created again under the name has another. A broker from before
    # topic ids were shown sends none.
    topic_id = f"  topic id {info.topic_id}" if info.topic_id else ""
    click.echo(f"topic {info.name}{topic_id}  partitions {info.partitions}  "
               f"replication factor {factor}  {config}")
    click.echo(f"{'partition':>9}  {'leader':<10} {'start':>12} {'end':>12} {'bytes':>14} "
               f"{'epoch':>6} {'hw':>12}  {'replicas':<24} in-sync")
    for p in info.partition_info:
        # An offline partition's log is nobody's to read: its zeros looked like an empty log.
        start, end, size, hw = (("-",) * 4 if not p.shard else
                                (p.start_offset, p.end_offset, p.size_bytes, p.high_watermark))
        click.echo(f"{p.partition:>9}  {p.shard or 'OFFLINE':<10} {start:>12} {end:>12} "
                   f"{size:>14} {p.leader_epoch:>6} {hw:>12}  {','.join(p.replicas):<24} "
                   f"{','.join(p.in_sync_replicas)}")
    if topics.remote_storage_enabled(info.config) or any(p.has_remote for p in info.partition_info):
        _echo_tiered(info.partition_info)


def _echo_tiered(partition_info) -> None:
    """``topic describe``'s second table, for a tiered topic: where each partition's
    offsets are (start above is the log start, remote included). A segment both
    uploaded and still within local retention counts in both byte columns. A remote
    log its shard has not listed yet (a new leader with the store down) is "?", not
    "nothing remote", and a line under the table says why."""
    click.echo(f"tiered storage\n{'partition':>9}  {'local start':>12} {'local bytes':>14} "
               f"{'remote start':>12} {'remote end':>12} {'remote bytes':>14}")
    for p in partition_info:
        remote_start, remote_end, remote_bytes = _remote_columns(p)
        click.echo(f"{p.partition:>9}  {p.local_start_offset:>12} {p.size_bytes:>14} "
                   f"{remote_start:>12} {remote_end:>12} {remote_bytes:>14}")
    for p in partition_info:
        if p.remote_not_listed:
            click.echo(f"partition {p.partition}: remote log unknown (?): {p.remote_not_listed}")


def _remote_columns(p) -> tuple:
    """(remote start, remote end, remote bytes) as ``_echo_tiered`` shows them."""
    if p.remote_not_listed:
        return "?", "?", "?"
    if not p.has_remote:
        return "-", "-", p.remote_bytes
    return p.remote_start_offset, p.remote_end_offset, p.remote_bytes


@topic.command("delete")
@click.argument("name")
@click.option("--topic-id", type=_TopicId(), default=None,
              help="delete it only if it has this topic id (as `topic describe` shows it, or "
                   "as a dashed UUID): not a topic created again under the name since")
@click.pass_context
def topic_delete(ctx, name, topic_id):
    with _admin(ctx) as admin:
        admin.delete_topic(name, topic_id=topic_id)
    click.echo(f"deleted topic {name}")


@topic.command("delete-records")
@click.argument("name")
@click.option("--partition", type=_PARTITION, required=True)
@click.option("--before-offset", type=click.IntRange(-1, OFFSET_MAX), required=True,
              help="Delete the records before this offset (-1: up to the high watermark); "
                   "it becomes the partition's log start offset.")
@click.pass_context
def topic_delete_records(ctx, name, partition, before_offset):
    """Delete a partition's records before an offset (Kafka's DeleteRecords,
    kafka-delete-records.sh): consumers from the earliest offset start there."""
    with _admin(ctx) as admin:
        low_watermarks = admin.delete_records({(name, partition): before_offset})
    click.echo(f"{name}-{partition}: log start offset (low watermark) now "
               f"{low_watermarks[(name, partition)]}")


@topic.command("elect-leaders")
@click.argument("name", required=False)
@click.option("--partition", "partitions", type=_PARTITION, multiple=True,
              help="Only this partition of NAME (repeatable); default: all of NAME's.")
@click.option("--election-type", type=click.Choice(["preferred", "unclean"]),
              default="preferred", show_default=True,
              help="preferred: each partition's first replica leads it again, once it holds "
                   "its leader's whole log; unclean: an offline partition gets any replica "
                   "that answers as leader (records may be lost).")
@click.pass_context
def topic_elect_leaders(ctx, name, partitions, election_type):
    """Elect leaders (Kafka's kafka-leader-election.sh): of NAME's partitions, or of
    every replicated partition without NAME. Prints each partition's outcome; exit
    status 1 if one was neither elected nor already led as asked."""
    if partitions and name is None:
        raise click.BadParameter("--partition needs a topic NAME", param_hint="--partition")
    with _admin(ctx) as admin:
        asked = None if name is None else [(name, p) for p in partitions] or \
            [(name, p) for p in range(admin.describe_topic(name).partitions)]
        results = admin.elect_leaders(election_type, asked)
    failed = 0
    for r in results:
        where = f"{r.topic}-{r.partition}"
        why = str(r.error).removeprefix(f"{where}: ")   # the messages name it too
        if r.error is None:
            click.echo(f"{where}: {r.leader} leads it now")
        elif isinstance(r.error, ElectionNotNeededError):
            click.echo(f"{where}: no election needed: {why}")
        else:
            failed += 1
            click.echo(f"{where}: not elected: {type(r.error).__name__}: {why}", err=True)
    if not results:
        click.echo("no replicated partition to elect a leader for")
    if failed:
        sys.exit(1)


# --- produce / consume -----------------------------------------------------------

@main.command()
@click.argument("topic_name", metavar="TOPIC")
@click.option("--partition", type=_PARTITION, default=None)
@click.option("--key-separator", default=None, callback=_not_empty,
              help="Text before the first SEP is the key.")
@click.option("--acks", type=click.Choice(["0", "1", "all"]), default="all", show_default=True,
              help="all: every in-sync replica has the record durably; 1: the leader has; "
                   "0: no reply. 1 and 0 turn idempotence off: a retried record may be "
                   "stored twice.")
@click.option("--linger-ms", type=_FiniteFloatRange(0, limits.CLI_LINGER_MS_MAX),
              default=limits.PRODUCER_LINGER_MS_DEFAULT, show_default=True,
              help="How long a batch waits for more records before it is sent.")
@click.option("--compression-type", type=click.Choice(["none", "gzip", "snappy", "lz4", "zstd"]),
              default="none", show_default=True,
              help="Send batches as Kafka batches of this compression.")
@click.option("--batch-bytes-max", type=click.IntRange(1, limits.BATCH_BYTES_MAX),
              default=limits.PRODUCER_BATCH_BYTES_DEFAULT, show_default=True,
              help="The largest batch, in bytes as encoded (Kafka's batch.size); keep it "
                   "within the topic's max.message.bytes.")
@click.pass_context
def produce(ctx, topic_name, partition, key_separator, acks, linger_ms, compression_type,
            batch_bytes_max):
    """Send one record per line of stdin. A record that fails stops the reading, and is
    said as soon as the next line comes (not only at the end of stdin).

    A record not acknowledged within --linger-ms plus --request-timeout-ms (the
    producer's delivery timeout, the least Kafka allows) fails the command: a
    broker that does not answer fails it in about --request-timeout-ms, as it
    fails the other commands."""
    from plinth.client.producer import Producer

    failures = _SendFailures()
    request_timeout_ms = ctx.obj["request_timeout_ms"]
    with Producer(broker=ctx.obj["broker"], acks="all" if acks == "all" else int(acks),
                  linger_ms=linger_ms, request_timeout_ms=request_timeout_ms,
                  delivery_timeout_ms=linger_ms + request_timeout_ms,
                  batch_bytes_max=batch_bytes_max,
                  compression_type=None if compression_type == "none" else compression_type
                  ) as producer:
        producer.partitions_for(topic_name)   # an unknown topic fails before reading stdin
        sent, bad_line = _send_lines(producer, topic_name, partition, key_separator, failures)
    # Closed: every record sent is acknowledged or failed
    if failures.first is not None:
        acknowledged = failures.acknowledged()
        click.echo(f"{counted(acknowledged, 'record')} of the {sent} sent "
                   f"{'was' if acknowledged == 1 else 'were'} acknowledged before the first "
                   f"failure stopped the input", err=True)
        raise failures.first   # the exit status says so
    if bad_line is not None:
        raise UserError(f"line {bad_line} has no key separator {key_separator!r}; the "
                        f"{counted(sent, 'record')} before it {'was' if sent == 1 else 'were'} "
                        f"produced")
    click.echo(f"produced {counted(sent, 'record')} to {topic_name}", err=True)


class _SendFailures:
    """The first failure of produce's records, as their batches resolve, and how many
    records were acknowledged. One callback per batch (BatchResult.add_done_callback),
    never a future per record: produce's memory stays bounded by the producer's buffer
    however long stdin runs (tail -f). A batch's record count is final once a record
    goes to a newer batch of its partition; those are kept until they resolve."""

    def __init__(self):
        self.first: BaseException | None = None   # set on the producer's sender thread
        self._watched: dict[int, list] = {}        # partition -> [its newest batch, records]
        self._counted: deque[tuple[object, int]] = deque()   # older batches, unresolved
        self._acknowledged = 0                     # records of the resolved batches, counted

    def watch(self, future) -> None:
        """Caller's thread: have the record's batch say its failure (once per batch)."""
        batch = future.batch
        newest = self._watched.get(batch.partition)
        if newest is None or newest[0] is not batch:
            if newest is not None:
                self._counted.append(tuple(newest))
            newest = self._watched[batch.partition] = [batch, 0]
            batch.add_done_callback(self._resolved)
        newest[1] += 1
        while self._counted and self._counted[0][0].done():
            self._fold(*self._counted.popleft())

    def acknowledged(self) -> int:
        """Caller's thread, once the producer is closed (every batch resolved): how many
        of the records sent were acknowledged."""
        for batch, count in [*self._counted, *map(tuple, self._watched.values())]:
            self._fold(batch, count)
        self._counted.clear()
        self._watched.clear()
        return self._acknowledged

    def _fold(self, batch, count: int) -> None:
        self._acknowledged += batch.records_acknowledged(count)   # (a split batch: some)

    def _resolved(self, batch) -> None:
        if batch.error is not None and self.first is None:
            self.first = batch.error


def _send_lines(producer, topic_name: str, partition: int | None, key_separator: str | None,
                failures: _SendFailures) -> tuple[int, int | None]:
    """Send stdin's lines as records until it ends, a record failed, or a line has no
    ``key_separator``: (records sent, the number of that line or None)."""
    separator = None if key_separator is None else key_separator.encode()
    sent = 0
    for number, line in enumerate(sys.stdin.buffer, 1):
        if failures.first is not None:
            break
        value, key = line.rstrip(b"\r\n"), None
        if separator is not None:
            key, found, value = value.partition(separator)
            if not found:
                return sent, number
        failures.watch(producer.send(topic_name, value, key=key, partition=partition))
        sent += 1
    return sent, None


@main.command()
@click.argument("topic_name", metavar="TOPIC")
@click.option("--partition", type=_PARTITION, default=None, help="Only this partition.")
@click.option("--offset", type=click.IntRange(0, OFFSET_MAX), default=None,
              help="Start here (needs --partition).")
@click.option("--from-beginning", is_flag=True, help="Start at the earliest offset.")
@click.option("--from-time", "from_time_ms", metavar="ISO8601", default=None,
              callback=lambda ctx, param, value: None if value is None else iso_time_ms(value),
              help="Start at the first record stamped at or after this time, e.g. "
                   "2026-12-03T12:00:00Z (no zone: UTC); at the end where none is.")
@click.option("--max-messages", type=click.IntRange(1), default=None,
              help="Exit after N records.")
@click.option("--timeout-ms", type=click.IntRange(0, limits.CLIENT_OPTION_MS_MAX), default=None,
              help="Exit after T ms without new records.")
@click.option("--print-key", is_flag=True,
              help="Print KEY<TAB>VALUE (an absent key or value prints as null).")
@click.option("--group", default=None, help="Consume as a member of this consumer group.")
@click.pass_context
def consume(ctx, topic_name, partition, offset, from_beginning, from_time_ms, max_messages,
            timeout_ms, print_key, group):
    """Print records' values, one per line.

    Exit status 0 when --max-messages records were printed, or when --timeout-ms ended
    with no new record. 1 when --timeout-ms ended while fetches of a partition were
    still failing (object storage unreachable, a shard restarting or not answering:
    errors the consumer retries), or --group's heartbeats were, with an error line
    naming the partition (or the group) and the last error: the records may be there,
    unread; 1 too when a partition's fetch had gone unanswered for clearly longer than
    a healthy shard takes (a hung shard), with an error line naming the partitions and
    how long. Each partition's fetches starting to fail are said on stderr at once, as a
    warning, however long --timeout-ms is."""
    from plinth.client.consumer import Consumer

    if offset is not None and partition is None:
        raise click.UsageError("--offset needs --partition")
    if group is not None and partition is not None:
        raise click.UsageError("--group gets its partitions from the group; drop --partition")
    if from_time_ms is not None and (group is not None or offset is not None or from_beginning):
        raise click.UsageError("--from-time picks the start itself; drop --group, --offset and "
                               "--from-beginning")
    if offset is not None and from_beginning:   # one start only: neither silently wins
        raise click.UsageError(f"--offset {offset} and --from-beginning each pick where to "
                               f"start; give one of them")
    if group is not None:   # refused here, not by the member's heartbeat: its log said it too
        from plinth.topics import validate_group_name

        validate_group_name(group)
    if offset is not None:
        _check_offset_in_range(ctx, topic_name, partition, offset)
    # With or without a group, subscribing reads the topic; --partition assigns one.
    consumer = Consumer(*([topic_name] if partition is None else []), broker=ctx.obj["broker"],
                        request_timeout_ms=ctx.obj["request_timeout_ms"], group=group,
                        auto_offset_reset="earliest" if from_beginning else "latest",
                        consumer_timeout_ms=float("inf") if timeout_ms is None else timeout_ms)
    with consumer:
        if partition is not None:
            consumer.assign([(topic_name, partition)])
            if offset is not None:
                consumer.seek(topic_name, partition, offset)
        if from_time_ms is not None:
            _seek_to_time(consumer, from_time_ms)
        if _print_records(consumer, max_messages, print_key):
            _exit_if_heartbeats_failing(consumer, timeout_ms)
            _exit_if_fetches_overdue(consumer, timeout_ms)
            _exit_if_fetches_failing(consumer, timeout_ms)


def _exit_if_heartbeats_failing(consumer, timeout_ms: int) -> None:
    """After --timeout-ms ended with no new record: exit 1 with an error line naming the
    group and the last error, if its heartbeats were still failing (the member may
    never have joined, and so read nothing)."""
    error = consumer.heartbeat_error()
    unanswered_ms = consumer.heartbeat_unanswered_ms()
    if error is None and unanswered_ms is not None and \
            unanswered_ms > limits.CONSUMER_FETCH_OVERDUE_MARGIN_MS:
        click.echo(f"error: PlinthTimeoutError: group {consumer.group}: no answer to its "
                   f"heartbeat for {unanswered_ms:.0f} ms when --timeout-ms {timeout_ms} "
                   f"ended: a coordinator answers at once, so the member may not have "
                   f"joined, nor read anything; is the group's coordinator shard hung? See "
                   f"`plinth status`", err=True)
        sys.exit(1)
    if error is None:
        return
    click.echo(f"error: {type(error).__name__}: group {consumer.group}: heartbeats were still "
               f"failing when --timeout-ms {timeout_ms} ended: {error}", err=True)
    sys.exit(1)


def _exit_if_fetches_overdue(consumer, timeout_ms: int) -> None:
    """After --timeout-ms ended with no new record: exit 1 with an error line naming the
    partitions whose fetch (or position reset) has gone unanswered for clearly longer
    than a healthy shard takes (Fetcher.overdue), and how long, if any has: a hung
    shard's partitions were read as empty until their fetches were given up as lost,
    after the request timeout. Checked before the failing fetches: it asks nothing (a
    failing partition's position may still have to be asked of the hung shard)."""
    overdue = sorted(consumer.overdue_fetches().items())
    if not overdue:
        return
    named = [f"{tp.topic}-{tp.partition} " + ("(asking its start offset)" if late.offset is None
                                              else f"at offset {late.offset}")
             for tp, late in overdue[:limits.CONSUMER_ERROR_PARTITIONS_NAMED_MAX]]
    more = len(overdue) - len(named)
    waited_ms = min(late.waited_ms for _, late in overdue)
    click.echo(f"error: PlinthTimeoutError: no answer for {waited_ms:.0f} ms or more, when "
               f"--timeout-ms {timeout_ms} ended, to the fetches of {', '.join(named)}"
               + (f" and {counted(more, 'more partition')}" if more else "")
               + f": a shard answers within fetch_max_wait_ms ({consumer.fetch_max_wait_ms} "
                 f"ms) even with no record, so the records may be there, unread; "
               + _overdue_cause(consumer, [tp for tp, _ in overdue]), err=True)
    sys.exit(1)


def _overdue_cause(consumer, overdue: list) -> str:
    """What an overdue fetch likely waits on: the object store, if an earlier fetch of
    one of those partitions failed on it (a read below the local log start waits for
    the store, and a hung store answers nothing: tester T-tier, session 42), else the
    shard."""
    errors = consumer.fetch_errors()
    for tp in overdue:
        error = errors.get(tp)
        # (A broker before Error.remoteStorage says so in the message only.)
        if error is not None and (getattr(error, "remote_storage", False)
                                  or "object storage" in str(error)):
            return (f"{tp.topic}-{tp.partition}'s fetch before failed on object storage "
                    f"({type(error).__name__}: {error}): is the tier store hung? See "
                    f"`plinth status` (tier store claim, upload errors)")
    return "is their shard hung? See `plinth status`"


def _exit_if_fetches_failing(consumer, timeout_ms: int) -> None:
    """After --timeout-ms ended with no new record: exit 1 with an error line naming the
    partitions whose fetches were still failing, and the last error, if any were; a
    user could not otherwise tell "store unavailable" from "no records"."""
    failing = sorted(consumer.fetch_errors().items())
    if not failing:
        return
    (tp, error), more = failing[0], len(failing) - 1
    click.echo(f"error: {type(error).__name__}: {tp.topic}-{tp.partition}: fetches at offset "
               f"{consumer.position(*tp)} were still failing when --timeout-ms {timeout_ms} "
               f"ended: {error}"
               + (f" (and the fetches of {counted(more, 'more partition')})" if more else ""),
               err=True)
    sys.exit(1)


def _check_offset_in_range(ctx, topic_name: str, partition: int, offset: int) -> None:
    """OffsetOutOfRangeError naming the partition, ``offset`` and the valid range unless
    the partition holds ``offset`` or it is the end (the next record's offset: wait for
    it). Kafka's console consumer resets such an offset to the end (its
    auto.offset.reset) and waits without a word; a typo then looked like an empty log."""
    from plinth.errors import OffsetOutOfRangeError

    with _admin(ctx) as admin:
        info = admin.list_offsets(topic_name, partition)
    if not info.start_offset <= offset <= info.end_offset:
        raise OffsetOutOfRangeError(
            f"{topic_name}-{partition}: --offset {offset} is outside the partition's offsets "
            f"{info.start_offset} (log start) .. {info.end_offset} (end: the next record's)")


def iso_time_ms(text: str) -> int:
    """ms since the epoch of an ISO 8601 time (no zone: UTC); click.BadParameter
    naming ``text`` if it is not one, or is before 1970."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time, such as "
                                 f"2026-12-03T12:00:00Z or 2026-12-03T13:00:00+01:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    time_ms = (when - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)
    if time_ms < 0:
        raise click.BadParameter(f"{text!r} is {time_ms} ms since the epoch; record times "
                                 f"start at 1970-01-01T00:00:00Z (0 ms)")
    return time_ms


def _seek_to_time(consumer, time_ms: int) -> None:
    """Each assigned partition to its first record stamped at or after ``time_ms``, or
    to its end where none is."""
    found = consumer.offsets_for_times({tp: time_ms for tp in consumer.assignment()})
    for tp, answer in found.items():
        if answer is None:
            consumer.seek_to_end(tp)
        else:
            consumer.seek(*tp, answer.offset)


_NULL = b"null"   # a key or value that is absent (a tombstone's), as Kafka's console consumer prints it


def _print_records(consumer, max_messages, print_key) -> bool:
    """Print the records until ``max_messages`` (False) or the consumer's timeout
    without a new record (True)."""
    out = sys.stdout.buffer
    count = 0
    try:
        for record in consumer:
            value = _NULL if record.value is None else record.value
            line = ((_NULL if record.key is None else record.key) + b"\t" + value + b"\n"
                    if print_key else value + b"\n")
            # Counted before the write: under PYTHONUNBUFFERED the write itself shows the
            # record to a reader, who may press Ctrl-C at once (only a Ctrl-C that lands
            # inside the write can count a record the write did not finish).
            count += 1
            out.write(line)
            out.flush()   # a reader of the pipe sees each record as it arrives
            if max_messages is not None and count >= max_messages:
                return False
    except KeyboardInterrupt:   # the usual way to stop a tailing consume: say what it did
        click.echo(f"{counted(count, 'record')} printed", err=True)
        raise
    out.flush()
    return True


# --- bench -------------------------------------------------------------------------

@main.group()
def bench():
    """Measure throughput and latency of a running broker (see plinth/bench.py)."""


def _bench_options(*names):
    """The shared ``plinth bench`` options, in this order, limited to ``names``."""
    options = {
        "messages": click.option("--messages", type=click.IntRange(1), default=None,
                                 help="Records in all (produce/consume default 1,000,000; e2e 100,000)."),
        "value_bytes": click.option("--value-bytes", type=click.IntRange(0), default=100,
                                    show_default=True),
        "key_bytes": click.option("--key-bytes", type=click.IntRange(0), default=16, show_default=True,
                                  help="Random keys (up to 1,048,576 distinct per producer); 0: no key."),
        "partitions": click.option("--partitions", type=click.IntRange(1, limits.PARTITIONS_PER_TOPIC_MAX),
                                   default=4, show_default=True,
                                   help="Partitions of the topic if it is created."),
        "replication_factor": click.option(
            "--replication-factor", type=click.IntRange(1, limits.REPLICATION_FACTOR_MAX),
            default=None, help="Copies of the topic if it is created (default: the server's)."),
        "producers": click.option("--producers", type=click.IntRange(1, 64), default=1,
                                  show_default=True, help="Producer processes, one Producer each."),
        "linger_ms": click.option("--linger-ms", type=_FiniteFloatRange(0, limits.CLI_LINGER_MS_MAX),
                                  default=None,
                                  help="Producer linger (default: the Producer's 5 ms)."),
        "batch_bytes_max": click.option("--batch-bytes-max", type=click.IntRange(1, limits.BATCH_BYTES_MAX),
                                        default=None, help="Producer batch size (default 1 MiB)."),
        "acks": click.option("--acks", type=click.Choice(["0", "1", "all"]), default="all",
                             show_default=True,
                             help="Producer acks (the Producer's default); 1 and 0 turn "
                                  "idempotence off, as the Producer does."),
        "topic": click.option("--topic", default=None,
                              help="Topic to use, created if missing (default: a fresh one)."),
        "rate": click.option("--rate", type=_FiniteFloatRange(0, min_open=True), default=None,
                             help="Records/s over all producers (default: flat out)."),
        "duration_s": click.option("--duration-s", type=_FiniteFloatRange(0, min_open=True), default=None,
                                   help="Send for this long instead of --messages records."),
        "one_at_a_time": click.option(
            "--one-at-a-time", is_flag=True,
            help="Each producer sends a record, waits for its acknowledgement, then sends the "
                 "next (paced by --rate if given), as the peers' one-at-a-time figures are "
                 "measured; use --linger-ms 0, else each record waits out the linger."),
        "watch_memory": click.option("--watch-memory", is_flag=True,
                                     help="Sample the RSS of the local broker's processes."),
        "as_json": click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
    }

    def decorate(fn):
        for name in reversed(names):
            fn = options[name](fn)
        return click.pass_context(fn)
    return decorate


_BENCH_COMMON = ("messages", "value_bytes", "key_bytes", "partitions", "replication_factor",
                 "producers", "linger_ms",
                 "batch_bytes_max", "acks", "topic")


@bench.command("produce")
@_bench_options(*_BENCH_COMMON, "rate", "duration_s", "one_at_a_time", "watch_memory", "as_json")
def bench_produce(ctx, as_json, **options):
    """Producers flat out (or at --rate); latency from send() to acknowledgement."""
    _run_bench(ctx, "produce", as_json, options, messages_default=1_000_000)


@bench.command("consume")
@_bench_options(*_BENCH_COMMON, "watch_memory", "as_json")
def bench_consume(ctx, as_json, **options):
    """Read --messages records from the start (producing them first, untimed, if missing)."""
    _run_bench(ctx, "consume", as_json, options, messages_default=1_000_000)


@bench.command("e2e")
@_bench_options(*_BENCH_COMMON, "rate", "one_at_a_time", "watch_memory", "as_json")
def bench_e2e(ctx, as_json, **options):
    """Latency from send() to delivery in a consumer process, at --rate records/s."""
    _run_bench(ctx, "e2e", as_json, options, messages_default=100_000)


def _run_bench(ctx, command, as_json, options, messages_default):
    import json

    from plinth import bench as benchmarks

    options["messages"] = options["messages"] or messages_default
    config = benchmarks.BenchConfig(broker=ctx.obj["broker"],
                                    request_timeout_ms=ctx.obj["request_timeout_ms"], **options)
    try:
        config.check(command)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    run = {"produce": benchmarks.run_produce, "consume": benchmarks.run_consume,
           "e2e": benchmarks.run_e2e}[command]
    report = run(config)
    click.echo(json.dumps(report.to_json()) if as_json else report.format_table())


main.add_command(group_cli)


if __name__ == "__main__":
    main()
