"""``plinth serve``: start Ray (or join a cluster), the controller, the shards and a router.

Runs in the server process's main thread. The embedded default keeps
everything on this machine and under the data directory:

- Ray binds to 127.0.0.1 only (``_node_ip_address``), so no traffic ever goes
  to the machine's network address. Ray turns a loopback ``_node_ip_address``
  into the machine's address unless it runs in its local-only mode, so the
  server sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before importing Ray.
- Ray's token authentication stays on (the ray 2.60 default), but its token
  lives in ``<data_dir>/ray.auth_token`` instead of ``~/.ray/auth_token``:
  Plinth writes nothing outside the data directory. The token file is made
  mode 0600 and one that another user owns or may read is refused
  (plinth/secret_files.py); Ray's session directory is made 0700.
- Ray's session files go under ``<data_dir>/ray`` when that path is short
  enough for Unix socket names, else under a fresh ``plinth-ray-*`` folder in
  the system temp directory (the log says which).
- Nothing it starts outlives it, even after kill -9: a reaper process
  (plinth/process_reaper.py) ends every process Ray started for it.
- Ray starts only what Plinth uses (see _quiet_ray and EMBEDDED_RAY_SYSTEM_CONFIG):
  no dashboard (API server), no autoscaler monitor and no log monitor (the
  controller's and shards' log lines are in ``<data dir>/logs``), and no
  metrics, task events, event-loop statistics or memory monitor, whose
  periodic work woke every Ray process; the raylet's other timers for what
  Plinth does not use (objects, task workers) run at seconds.

With ``ray_address`` it joins an existing cluster instead and changes none of
those settings.

Before it starts anything, the server takes the data directory's lock
(plinth/data_dir_lock.py: a second server on the same directory refuses at
once) and loads or creates the cluster's key pair there
(plinth/cluster_keys.py): its shards admit only peers holding it, i.e. its
routers.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from plinth import limits, topics
from plinth.cluster_keys import (CLUSTER_KEY_FILE, ClusterKeys, load_or_create, make_ipc_dir,
                                 remove_ipc_dir)
# CONTROLLER_NAME: imported from here by deploy/await_cluster.py and the tests.
from plinth.control.data_dir_check import (load_checked_metadata,
                                          refuse_tiered_topics_without_their_store)
from plinth.control.controller_handle import (CONTROLLER_NAME,  # noqa: F401
                                              ControllerHandle, StartReport)
from plinth.control.metadata import METADATA_FILE
from plinth.data_dir_lock import DataDirLock
from plinth.data_dir_mode import DATA_DIR_MODE, open_to_others
from plinth.durable_files import write_file_atomically
from plinth.errors import BrokerError, InvalidConfigError, StorageError, UnavailableError
from plinth.loopback import is_loopback
from plinth.process_tuning import tune_data_path_process
from plinth.ray_messages import route_raylet_messages
from plinth.secret_files import load_or_create_secret
from plinth.shards import file_budget
from plinth.shards.shard_handle import TierOptions
from plinth.version import VERSION

if TYPE_CHECKING:
    from plinth.shards.tier.store_claim import ClaimKeeper

log = logging.getLogger(__name__)

RAY_TOKEN_FILE = "ray.auth_token"   # in the data dir: the embedded Ray's auth token
RAY_ADDRESS_FILE = "ray.address"    # in the data dir: the embedded Ray's GCS HOST:PORT
RAY_DIR = "ray"                     # in the data dir: the embedded Ray's temp dir (its sessions)

# Ray's periodic work that the embedded broker turns off; each of these woke
# every Ray process (the raylet, the GCS, the server, the controller and every
# shard) on a timer, on the same cores as the data path. Plinth reads none of it:
# it has its own metrics (control/metrics.py) and does not use Ray's task list,
# timeline or state API. Node health (the GCS's health checks of the raylet),
# actor restarts and named detached actors do not depend on any of them.
EMBEDDED_RAY_SYSTEM_CONFIG = {
    "enable_metrics_collection": False,   # per-process metrics, exported every 10 s
    "task_events_report_interval_ms": 0,  # 0: no task events sent to the GCS each second
    "event_stats": False,                 # per-handler statistics of every event loop
    # The raylet's and the GCS's timers that serve what Plinth does not use, slowed or
    # off (issue 13; README, "An idle broker", measured what they cost):
    "memory_monitor_refresh_ms": 0,       # the OOM killer's poll, every 250 ms: off.
    # Plinth's memory is bounded by its own limits, and a shard killed for memory
    # would be a failover, not a relief.
    "raylet_check_gc_period_milliseconds": 10_000,    # object-store-driven GC, 100 ms
    "local_fs_monitor_interval_ms": 10_000,           # disk-full check for objects, 100 ms
    "object_manager_timer_freq_ms": 1_000,            # object pulls between nodes, 100 ms
    "kill_idle_workers_interval_ms": 5_000,           # idle task workers, 200 ms
    "raylet_report_resources_period_milliseconds": 1_000,   # resource view to the GCS, 100 ms
    "io_context_monitor_probe_interval_ms": 10_000,   # the GCS's event-loop lag probe
    # Ray starts its workers at niceness 15, below everything else on the machine; the
    # shard actors are the data path (plinth/process_tuning.py renices them where this
    # setting is not Plinth's to make, i.e. with --ray-address, given the privilege).
    "worker_niceness": 0,
}


@dataclass
class ServeOptions:
    data_dir: Path
    listen: str = limits.BROKER_URL_DEFAULT
    shards: int | None = None
    ray_address: str | None = None
    fsync_policy: str = "always"
    fsync_interval_ms: int = limits.FSYNC_INTERVAL_MS_DEFAULT
    curve_secret_key: Path | None = None     # the server's .key_secret (plinth keygen)
    authorized_keys: Path | None = None      # directory of clients' .key files
    acl_file: Path | None = None
    allow_insecure: bool = False             # plaintext on a non-loopback address
    cluster_name: str | None = None          # names the Ray namespace; routers join by it
    metrics_port: int | None = None          # Prometheus endpoint
    metrics_host: str = "127.0.0.1"
    # How the router reaches the shards: "curve" (TCP, CurveZMQ) or "ipc" (same host,
    # a 0700 directory, unencrypted; embedded Ray only); "auto": ipc with the embedded
    # Ray, curve in a Ray cluster. See plinth/cluster_keys.py.
    internal_hop: str = "auto"
    # A topic's replication factor when its creator gives none (None: 1 when the
    # shards run on one node, else min(3, their nodes)); whether replicas may share
    # a node (testing on one machine).
    default_replication_factor: int | None = None
    allow_replicas_on_one_node: bool = False
    # Kafka's auto.leader.rebalance.enable and leader.imbalance.check.interval.seconds
    # (control/leader_elections.py).
    auto_leader_rebalance: bool = True
    leader_imbalance_check_interval_s: float = limits.LEADER_REBALANCE_INTERVAL_S
    # Copies of the consumer groups' committed offsets (None: the default factor).
    offsets_replication_factor: int | None = None
    # Clients' produce and fetch straight to the leader shard: "auto" (where allowed,
    # see direct_clients_allowed) or "off" (always through the router).
    direct_clients: str = "auto"
    # Tiered storage (issue 14): the object store's URL (None: none) and the local disk
    # each shard may use for cached remote chunks. See tier_options.
    tier_url: str | None = dataclasses.field(default=None, repr=False)   # may hold secrets
    tier_cache_bytes: int = limits.TIER_CACHE_BYTES_DEFAULT
    # Claim the store for this data dir even though another copy of it has claimed it
    # since this one last ran (shards/tier/store_claim.py).
    tier_store_take_over: bool = False
    # The Kafka listener (issue 15): HOST:PORT to bind, and to tell clients (None:
    # no listener; the bound address). See router/kafka/service.py.
    kafka_listen: str | None = None
    kafka_advertised: str | None = None
    kafka_auto_create_topics: bool = False   # Kafka's auto.create.topics.enable
    # Its TLS certificate and key (PEM) and its SASL users file (None: none).
    kafka_tls_cert: Path | None = None
    kafka_tls_key: Path | None = None
    kafka_sasl_users: Path | None = None
    # Its bound of connections (Kafka's max.connections; None: the default,
    # limits.KAFKA_CONNECTIONS_MAX), and of its shares (limits.kafka_connection_limits).
    kafka_connections_max: int | None = None
    # The web console's HOST:PORT, started as a child process (None: no console).
    console_listen: str | None = None
    # Free space a start needs on the data dir's file system (see check_free_space).
    data_dir_free_bytes_min: int = limits.DATA_DIR_FREE_BYTES_MIN
    # A shard refuses produces that would leave less free (shards/disk_reserve.py).
    produce_free_bytes_min: int = limits.PRODUCE_FREE_BYTES_MIN_DEFAULT

    def check_console_listen(self) -> None:
        """InvalidConfigError for a --console-listen that is not HOST:PORT on loopback:
        the console serve starts has no login (plinth console has, beyond loopback)."""
        if self.console_listen is None:
            return
        from plinth.client.console.config import ConsoleConfig

        try:
            loopback = ConsoleConfig(listen=self.console_listen).loopback
        except InvalidConfigError as exc:   # it named the address, not the option
            raise InvalidConfigError(f"--console-listen {self.console_listen!r}: {exc}; or off "
                                     f"for no console") from None
        if not loopback:
            raise InvalidConfigError(
                f"--console-listen {self.console_listen}: plinth serve starts its console on "
                f"a loopback address only (it has no login); beyond loopback run plinth "
                f"console with --auth-file and --tls-cert/--tls-key")

    def kafka_options(self):
        """The Kafka listener's options, checked, or None. InvalidConfigError for what
        it cannot serve safely (router/kafka/service.py)."""
        return _kafka_options(self)

    def tier_options(self) -> TierOptions:
        """The shards' TierOptions. Raises InvalidConfigError, naming the option and
        the URL (its secrets masked), for a URL the object-store layer cannot use
        (shards/tier/remote_store.py parses it; nothing is contacted: a wrong bucket
        or refused credentials show on the first upload), for memory:// (the unit
        tests' store: lost at exit, not shared between shard processes) or a cache
        size outside TIER_CACHE_BYTES_MIN..MAX."""
        if not (limits.TIER_CACHE_BYTES_MIN <= self.tier_cache_bytes
                <= limits.TIER_CACHE_BYTES_MAX):
            raise InvalidConfigError(
                f"--tier-cache-bytes {self.tier_cache_bytes} is outside "
                f"{limits.TIER_CACHE_BYTES_MIN}..{limits.TIER_CACHE_BYTES_MAX}")
        if self.tier_url is None:
            if self.tier_store_take_over:
                raise InvalidConfigError("--tier-store-take-over claims the store of "
                                         "--tier-url for this data dir; give --tier-url too")
            return TierOptions(None, self.tier_cache_bytes)
        from plinth.shards.tier.remote_store import open_remote_store, redacted_url

        shown = redacted_url(self.tier_url)
        size = len(self.tier_url.encode())
        if not 0 < size <= limits.TIER_URL_BYTES_MAX:
            raise InvalidConfigError(f"--tier-url {shown!r} is {size} bytes; it must be 1 to "
                                     f"{limits.TIER_URL_BYTES_MAX}")
        if self.tier_url.lower().startswith("memory:"):
            raise InvalidConfigError(
                f"--tier-url {shown!r}: memory:// is an in-process store for unit tests; it "
                f"loses every segment at exit and each shard process would have its own. Use "
                f"file:///path (one machine) or s3://, gs://, az:// (a cluster)")
        try:
            open_remote_store(self.tier_url)
        except InvalidConfigError as exc:
            raise InvalidConfigError(f"--tier-url {shown!r} cannot be used: {exc}") from None
        return TierOptions(self.tier_url, self.tier_cache_bytes)

    def direct_clients_allowed(self) -> bool:
        """Whether shards may bind a direct socket for clients: asked ("auto"), with a
        client listener that is plaintext on loopback (no CurveZMQ, so no ACL: the
        direct socket has no authentication of its own, so a client gets nothing
        there it could not get through the router). Each shard then binds one only
        if its Ray node's address is loopback (the embedded Ray, or a local-only
        cluster: every shard on this machine, whose 127.0.0.1 is the client's too)."""
        host = self.listen.split("://", 1)[-1].rsplit(":", 1)[0]
        return (self.direct_clients == "auto" and self.curve_secret_key is None
                and is_loopback(host))

    def resolved_internal_hop(self) -> str:
        """ipc or curve. Auto takes ipc when the embedded Ray keeps every hop on this
        machine: CurveZMQ's encryption cost 15-22% of produce and consume throughput
        there (README, Performance), and a Unix socket in a 0700 directory
        authenticates by file permissions without it."""
        if self.internal_hop == "auto":
            return "curve" if self.ray_address else "ipc"
        return self.internal_hop

    def security(self):
        """The router's Security, or None; refuses plaintext beyond loopback unless allowed."""
        if self.curve_secret_key is None:
            if self.authorized_keys is not None or self.acl_file is not None:
                raise InvalidConfigError("--authorized-keys and --acl need --curve-secret-key")
            host = self.listen.split("://", 1)[-1].rsplit(":", 1)[0]
            if not is_loopback(host) and not self.allow_insecure:
                raise InvalidConfigError(
                    f"refusing to listen on {self.listen} without CurveZMQ keys: anyone who can "
                    f"reach it could read and write every topic. Pass --curve-secret-key and "
                    f"--authorized-keys, or --allow-insecure to do it anyway")
            return None
        if self.authorized_keys is None:
            raise InvalidConfigError("--curve-secret-key needs --authorized-keys DIR")
        from plinth.router.security import Security

        return Security(self.curve_secret_key, self.authorized_keys, self.acl_file)


def _kafka_options(options):
    """The Kafka listener's options of a ServeOptions or RouterOptions, checked, or None."""
    if options.kafka_listen is None:
        given = [name for name, value in (
            ("--kafka-advertised", options.kafka_advertised),
            ("--kafka-auto-create-topics", options.kafka_auto_create_topics or None),
            ("--kafka-tls-cert", options.kafka_tls_cert), ("--kafka-tls-key", options.kafka_tls_key),
            ("--kafka-sasl-users", options.kafka_sasl_users),
            ("--kafka-connections-max", options.kafka_connections_max)) if value is not None]
        if given:
            raise InvalidConfigError(f"{', '.join(given)} need --kafka-listen")
        return None
    from plinth.router.kafka.service import KafkaListenerOptions

    kafka = KafkaListenerOptions(options.kafka_listen, options.kafka_advertised,
                                 options.kafka_auto_create_topics,
                                 tls_cert=options.kafka_tls_cert, tls_key=options.kafka_tls_key,
                                 sasl_users=options.kafka_sasl_users,
                                 allow_insecure=options.allow_insecure,
                                 connections_max=(limits.KAFKA_CONNECTIONS_MAX
                                                  if options.kafka_connections_max is None
                                                  else options.kafka_connections_max))
    kafka.check(router_has_keys=options.curve_secret_key is not None)
    return kafka


def _start_kafka(options, router, cluster_id: str, security=None, data_dir: Path | None = None):
    """The Kafka listener beside this process's ``router``, started; None without one.
    ``security``: the router's (router/security.py), which lets the listener's keys in.
    ``data_dir``: the broker's, which DescribeLogDirs names (None: not known here)."""
    if options is None:
        return None
    from plinth.router.kafka.service import KafkaService

    in_process = (None if router.in_process_url is None
                  else (router.in_process_url, router.context))
    service = KafkaService(options, router.listen, cluster_id,
                           brokers=lambda: router.routing.kafka_brokers, security=security,
                           log_dir="" if data_dir is None else str(data_dir.resolve()),
                           in_process=in_process)
    service.start()
    return service


def _advertised(kafka) -> str:
    """The Kafka listener's advertised HOST:PORT, announced with its router ("" if none)."""
    return "" if kafka is None else kafka.advertised


def namespace_for(data_dir: Path, cluster_name: str | None = None) -> str:
    """The Ray namespace of a broker: ``plinth-<cluster name>``, or by default one
    derived from its data dir. Extra routers find the broker by it."""
    if cluster_name:
        return f"plinth-{cluster_name}"
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return f"plinth-{digest}"


def _start_ray(options: ServeOptions) -> None:
    namespace = namespace_for(options.data_dir, options.cluster_name)
    if options.ray_address:
        join_ray(options.ray_address, namespace, log_to_driver=True)
        return
    # Outside ray_dir, which Ray makes writable by everyone (made for /tmp/ray): there
    # another local user could swap the token for one they know before Ray reads it.
    token_path = options.data_dir / RAY_TOKEN_FILE
    load_or_create_secret(token_path, lambda: secrets.token_hex(32), "Ray's auth token")
    # Before anything starts: Ray's processes inherit the reaper's mark, and the
    # reaper ends them when this process is gone, even after kill -9. Ray is not
    # imported yet, so at a normal exit this runs after Ray's atexit shutdown.
    from plinth.process_reaper import ProcessReaper

    reaper = ProcessReaper.start()
    atexit.register(reaper.release)
    ray_dir = options.data_dir / RAY_DIR
    ray_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    # Also here, not only after ray.init: Ray makes it 0777 during ray.init, and a
    # server killed within that call left it so.
    os.chmod(ray_dir, DATA_DIR_MODE)
    prune_ray_sessions(ray_dir, limits.RAY_SESSIONS_KEPT_MAX - 1)   # ray.init adds one
    _use_embedded_ray_settings(token_path)
    import ray

    temp_dir = str(ray_dir.resolve())
    if len(temp_dir.encode()) > limits.RAY_TEMP_DIR_BYTES_MAX:
        temp_dir = tempfile.mkdtemp(prefix="plinth-ray-")
        atexit.register(shutil.rmtree, temp_dir, True)
        log.info("%s is too long for Ray's socket names; Ray's session files go to %s",
                 ray_dir, temp_dir)
    with _quiet_ray():
        ray.init(_node_ip_address="127.0.0.1", _temp_dir=temp_dir, namespace=namespace,
                 num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, _system_config=EMBEDDED_RAY_SYSTEM_CONFIG)
    route_raylet_messages()   # a shard's death: one line of ours, not Ray's OOM paragraph
    _say_embedded_ray_address(options.data_dir, ray.get_runtime_context().gcs_address)
    # Ray shares its temp directory with every user (mode 0777, as /tmp/ray); this one
    # is the server's own, and no one else may put files (sockets, session links) in it.
    # (Each Ray worker that starts later makes it 0777 again: make_ray_dir_private.)
    for directory in {str(ray_dir), temp_dir}:
        os.chmod(directory, DATA_DIR_MODE)


def prune_ray_sessions(ray_dir: Path, kept: int) -> list[Path]:
    """Remove all but the newest ``kept`` of Ray's session directories in ``ray_dir``
    (``session_<date>_<pid>``; the ``session_latest`` link is not one), each logged at
    INFO; returns those removed. Server process, main thread, before ``ray.init`` and
    with the data dir's lock held: no Ray of this data dir runs, so none is in use (a
    Ray killed with its server is being ended by the reaper; its open files stay
    readable to it). Newest by modification time, then name (date, time, pid)."""
    sessions = sorted((entry for entry in ray_dir.glob("session_*")
                       if entry.is_dir() and not entry.is_symlink()),
                      key=lambda entry: (entry.stat().st_mtime, entry.name))
    removed = sessions[:max(0, len(sessions) - kept)]
    for session in removed:
        shutil.rmtree(session, ignore_errors=True)
        log.info("removed Ray's session files of an earlier start, %s (the newest %d "
                 "are kept)", session, kept)
    return removed


def remove_ray_sockets(ray_dir: Path) -> int:
    """Remove the Unix sockets Ray's processes left in its session directories in
    ``ray_dir`` (``session_*/sockets``: the raylet's and the object store's, dead once
    Ray has stopped; a crash's too), so that a stopped data dir holds none for ``tar``
    to skip with "socket ignored" (a backup: README, "Backing up, restoring and
    copying a data dir"); the rest of each session (its logs) stays, as
    prune_ray_sessions bounds them. Returns how many it removed; one it cannot is
    logged (the stop goes on). Server process, main thread, after Ray stopped, with
    the data dir's lock held: no Ray of this data dir runs."""
    removed = 0
    try:
        for session in ray_dir.glob("session_*"):
            sockets = session / "sockets"
            if session.is_symlink() or not sockets.is_dir():
                continue
            for path in sockets.iterdir():
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink(missing_ok=True)
                    removed += 1
    except OSError as exc:
        log.warning("cannot remove Ray's sockets in %s after it stopped: %s%s", ray_dir,
                    exc.strerror or exc, f": {exc.filename}" if exc.filename else "")
    return removed


def _use_embedded_ray_settings(token_path: Path, joining: bool = False) -> None:
    """The environment of the embedded Ray, set before Ray reads it (server process,
    and a ``plinth router --data-dir`` joining it): Ray's local-only mode, in which it
    keeps 127.0.0.1 as the node address instead of the machine's network address,
    and token authentication with the data dir's token. The server keeps what its
    environment already says; a router ``joining`` the server's Ray takes the
    server's settings whatever its environment says (another Ray's token would be
    refused)."""
    settings = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(token_path)}
    for name, value in settings.items():
        if joining:
            os.environ[name] = value
        else:
            os.environ.setdefault(name, value)
    if joining:
        os.environ.pop("RAY_AUTH_TOKEN", None)   # (it would be read before the path)
    from ray._raylet import Config

    Config.initialize("")   # Ray reads RAY_AUTH_MODE once; make it see ours


def _say_embedded_ray_address(data_dir: Path, gcs_address: str) -> None:
    """Write the embedded Ray's address to <data dir>/ray.address, where ``plinth router
    --data-dir`` finds it; removed at exit (after a kill -9 it stays, and names a
    port where nothing listens once the reaper ended Ray)."""
    path = data_dir / RAY_ADDRESS_FILE
    write_file_atomically(path, gcs_address.encode())
    atexit.register(_remove_ray_address, path)


def _remove_ray_address(path: Path) -> None:
    """At exit: remove ray.address; one that cannot be (a disk gone read-only) is left,
    said in one line, and names a port where nothing listens once Ray has ended."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove %s at exit: %s", path, exc.strerror or exc)


def embedded_ray_address(data_dir: Path) -> str:
    """The address of the embedded Ray of the ``plinth serve`` on ``data_dir``, from its
    ray.address; InvalidConfigError if it has none (no server runs there, or it
    runs in a Ray cluster, where a router is given --ray-address)."""
    try:
        return (data_dir / RAY_ADDRESS_FILE).read_text().strip()
    except FileNotFoundError:
        raise InvalidConfigError(
            f"--data-dir {data_dir}: no plinth serve with its own Ray runs there (it writes "
            f"{RAY_ADDRESS_FILE} once its Ray is up); for a broker in a Ray cluster give "
            f"--ray-address and --cluster-name") from None


def join_ray(address: str, namespace: str, option: str = "--ray-address", **options) -> None:
    """``ray.init`` joining the Ray cluster at ``address`` (--ray-address: HOST:PORT of its
    head's GCS, or "auto"), its failures said in one line naming the option: a value
    that is no address (InvalidConfigError), an address where nothing listens, checked
    first within RAY_ADDRESS_CONNECT_WAIT_S because Ray itself retries for minutes
    without heeding SIGTERM, or a cluster that refuses this process, e.g. without its
    auth token (UnavailableError). Server process, main thread."""
    if address != "auto":
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidConfigError(f"{option} {address!r} is not HOST:PORT (the Ray "
                                     f"head's GCS address, which ray start --head prints) "
                                     f"or auto")
        try:
            socket.create_connection((host.strip("[]"), int(port)),
                                     timeout=limits.RAY_ADDRESS_CONNECT_WAIT_S).close()
        except OSError as exc:
            raise UnavailableError(
                f"{option} {address}: no Ray there ({exc.strerror or exc}, waited up "
                f"to {limits.RAY_ADDRESS_CONNECT_WAIT_S:g} s): is its head running, and is "
                f"this its GCS port?") from None
    import ray

    watchdog = threading.Timer(limits.RAY_JOIN_WAIT_S, _exit_join_hung, (option, address))
    watchdog.daemon = True
    watchdog.start()
    try:
        ray.init(address=address, namespace=namespace, logging_level=logging.WARNING, **options)
    except (ConnectionError, ValueError) as exc:
        raise UnavailableError(f"{option} {address}: cannot join its Ray cluster: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__} "
                               f"(a cluster with token auth needs RAY_AUTH_TOKEN_PATH or "
                               f"RAY_AUTH_TOKEN set to its token)") from None
    finally:
        watchdog.cancel()
    route_raylet_messages()


def _exit_join_hung(option: str, address: str) -> None:
    """ray.init did not join within RAY_JOIN_WAIT_S (the watchdog's thread): say why in
    the CLI's one-line form and end the process. Nothing else can: the main thread is
    in Ray's C++ retry loop, which heeds no signal, and nothing has started yet."""
    host = address.rpartition(":")[0].strip("[]")
    local_only = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0"
    hint = ("; a local-only Ray cluster (its nodes on 127.0.0.1, started with "
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) is joined only in that mode: run plinth "
            "with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 too (without it Ray swaps 127.0.0.1 for "
            "this machine's address, where nothing listens)"
            if is_loopback(host) and not local_only else "")
    os.write(2, (f"error: UnavailableError: {option} {address}: Ray did not let this process "
                 f"join within {limits.RAY_JOIN_WAIT_S:g} s (something accepts connections "
                 f"there, but no Ray head answered){hint}\n").encode())
    os._exit(1)


@contextlib.contextmanager
def _quiet_ray():
    """While ``ray.init`` starts the embedded head node (server process, main thread):
    skip Ray's API server, autoscaler monitor and log monitor, three Python
    processes of about 80 MiB each (0.1, 0.1 and 0.7 % of a core, idle).

    ``include_dashboard=False`` still starts the API server (for usage
    statistics) and ray.init has no switch for the two monitors (``ray start``
    has a hidden ``--no-monitor``; ``include_log_monitor`` is not among
    ray.init's arguments), so their start methods on Ray's Node are replaced
    by no-ops for the call. Plinth uses none of them: the monitor runs the
    autoscaler, and the API server the dashboard, job submission and the state
    API. The log monitor copied the actors' stderr into the server's output,
    polling their files ten times a second (fixed in Ray's code): the
    controller and the shards write their own log files instead
    (plinth/actor_logs.py, ``<data dir>/logs``), and ``log_to_driver=False``
    drops the server's thread that printed them. The dashboard and runtime-env
    agents stay: the raylet starts them itself and exits if either is missing.
    Ray is pinned (pyproject.toml): an upgrade that renames these methods fails
    here, at start, and one that starts the processes another way fails
    tests/loadtest/test_idle_broker.py.
    """
    from ray._private.node import Node

    skipped = {"start_api_server": Node.start_api_server, "start_monitor": Node.start_monitor,
               "start_log_monitor": Node.start_log_monitor}
    Node.start_api_server = lambda self, **_: None
    Node.start_monitor = lambda self: None
    Node.start_log_monitor = lambda self: None
    try:
        yield
    finally:
        for name, method in skipped.items():
            setattr(Node, name, method)


class Server:
    """The broker in this process: controller handle plus a router."""

    def __init__(self, options: ServeOptions):
        self.options = options
        self.controller = None
        self.router = None
        self.kafka = None
        self._lock = DataDirLock(options.data_dir)
        self._held_ports: list[socket.socket] = []
        self._fresh_data_dir = False   # whether start made the data dir
        self._ray_started = False
        self._ipc_dir: str | None = None   # where the shards' ipc:// sockets go, if made
        self._locked = False
        self._tier_claim: ClaimKeeper | None = None

    def start(self) -> StartReport:
        """Start everything; returns which shards serve and which do not (and why).
        Raises InvalidConfigError at once if another server holds the data dir."""
        raise_open_file_limit("plinth serve")   # before Ray: its processes inherit it
        security = self.options.security()   # config errors before anything starts
        self.options.check_console_listen()
        kafka = self.options.kafka_options()
        tier = self.options.tier_options()
        if tier.enabled:
            from plinth.shards.tier.remote_store import redacted_url

            log.info("tiered storage in %s; each shard caches up to %d bytes of it",
                     redacted_url(tier.url), tier.cache_bytes)
        if self.options.default_replication_factor is not None:
            topics.validate_replication_factor("", self.options.default_replication_factor,
                                               what="--default-replication-factor")
        internal_hop = self.options.resolved_internal_hop()
        if internal_hop == "ipc" and self.options.ray_address:
            raise InvalidConfigError("--internal-hop ipc needs the embedded Ray (no "
                                     "--ray-address): hops between nodes stay CurveZMQ")
        # Every port is taken before anything is created: a port in use fails here, in
        # well under a second, not once Ray and the shards run and the data dir is made.
        # The lock of a data dir that is there comes first (it creates nothing): a second
        # server on it, with the same --listen, is told which server holds it.
        self._fresh_data_dir = not self.options.data_dir.exists()
        if not self._fresh_data_dir:
            self._take_lock()
        self._held_ports = hold_listen_ports(self.options, kafka)
        if self._fresh_data_dir:
            self._take_lock()
        open_warning = open_to_others(self.options.data_dir)
        if open_warning is not None:   # shared on purpose, or an older Plinth's: go on
            log.warning("%s", open_warning)
        # A damaged file is one line here, not an actor dead in its constructor.
        metadata = load_checked_metadata(self.options.data_dir)
        # Before the claim: a wrong --tier-url is refused without writing to its store.
        refuse_tiered_topics_without_their_store(metadata, tier.store if tier.enabled else None)
        check_writable(self.options.data_dir)
        check_free_space(self.options.data_dir, self.options.data_dir_free_bytes_min)
        if not self.options.ray_address:   # the shards start here, under this one's limits
            files_warning = file_budget.start_warning()
            if files_warning is not None:
                log.warning("%s", files_warning)
        cluster_keys = load_or_create(self.options.data_dir)
        if internal_hop == "ipc":
            self._ipc_dir = make_ipc_dir(self.options.data_dir)
            cluster_keys = dataclasses.replace(cluster_keys, ipc_dir=self._ipc_dir)
        tier = self._claim_tier_store(tier)
        self._ray_started = True   # (even if it fails half way: Ray's processes may run)
        try:
            _start_ray(self.options)   # first: it sets Ray's environment before Ray is imported
        except Exception as exc:
            full = _full_disk_refusal(self.options.data_dir,
                                      self.options.data_dir_free_bytes_min, exc)
            if full is None:
                raise
            raise full from None

        import ray

        from plinth.router.router import Router

        self.controller = self._create_controller(cluster_keys, tier)
        report = self.controller.start()
        if self._tier_claim is not None:   # for plinth status (the keeper's thread)
            self._tier_claim.report_to(self._report_tier_claim)
        for warning in report.warnings:   # on the server's stderr, not only controller.log
            log.warning("%s", warning)
        self.router = Router(self.options.listen, self.controller, security=security,
                             cluster_keys=cluster_keys)
        release_ports(self._held_ports)   # for the listeners' own binds, just below
        with option_os_errors("--listen", self.options.listen):
            self.router.start(self.controller.routing())
        with option_os_errors("--kafka-listen", self.options.kafka_listen):
            self.kafka = _start_kafka(kafka, self.router,
                                      namespace_for(self.options.data_dir,
                                                    self.options.cluster_name),
                                      security, self.options.data_dir)
        self.controller.router_started(self.options.listen, ray.util.get_node_ip_address(),
                                       _advertised(self.kafka))
        _start_metrics(self.controller, self.options.metrics_port, self.options.metrics_host,
                       self.router, kafka=self.kafka,
                       tier_claim=None if self._tier_claim is None else self._tier_claim.state)
        return report

    def _claim_tier_store(self, tier: TierOptions) -> TierOptions:
        """Claim the tier store for this data dir (shards/tier/store_claim.py): an
        InvalidConfigError if a copy of it runs beside it, or has claimed the store
        since (without --tier-store-take-over). Returns the options every shard gets,
        with the claim its deletions are fenced by."""
        if not tier.enabled:
            return tier
        from plinth.shards.tier.remote_store import open_remote_store
        from plinth.shards.tier.store_claim import ClaimKeeper, new_start

        start = new_start(self.options.data_dir)
        keeper = ClaimKeeper(open_remote_store(tier.url, missing_root_ok=True), tier.store,
                             self.options.data_dir, start,
                             take_over=self.options.tier_store_take_over)
        keeper.claim_at_start()
        self._tier_claim = keeper
        return dataclasses.replace(tier, claim=(start.data_dir_id, start.instance_id))

    def _report_tier_claim(self, state) -> None:
        self.controller.tier_claim_reported(state.held, state.line)

    def _release_tier_claim(self) -> None:
        if self._tier_claim is not None:
            self._tier_claim.release()
            self._tier_claim = None

    def _take_lock(self) -> None:
        """One server per data dir (plinth/data_dir_lock.py); makes the dir if it is not
        there. InvalidConfigError naming the holder, or the data dir's problem."""
        with option_os_errors("--data-dir", self.options.data_dir):
            self._lock.acquire()
        self._locked = True

    def _create_controller(self, cluster_keys: ClusterKeys,
                           tier: TierOptions) -> ControllerHandle:
        # After a crash, Ray may still hold the dead broker's controller name
        # for a moment; a live broker on the same data dir holds it for good.
        deadline = time.monotonic() + limits.CONTROLLER_NAME_WAIT_S
        while True:
            try:
                return ControllerHandle.create(
                    str(self.options.data_dir.resolve()), self.options.shards,
                    self.options.fsync_policy, self.options.fsync_interval_ms, _this_node(),
                    cluster_keys,
                    default_replication_factor=self.options.default_replication_factor,
                    allow_replicas_on_one_node=self.options.allow_replicas_on_one_node,
                    leader_rebalance_interval_s=self.options.leader_imbalance_check_interval_s
                    if self.options.auto_leader_rebalance else None,
                    offsets_replication_factor=self.options.offsets_replication_factor,
                    direct_clients=self.options.direct_clients_allowed(), tier=tier,
                    security_required=security_required(self.options),
                    produce_free_bytes_min=self.options.produce_free_bytes_min)
            except ValueError as exc:
                if "already taken" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise self._namespace_taken() from None
                time.sleep(limits.CONTROLLER_NAME_RETRY_INTERVAL_S)

    def _namespace_taken(self) -> InvalidConfigError:
        """The error of a start whose Ray namespace another broker's controller holds
        (a copy of a data dir started with the original's --cluster-name, or the same
        data dir path on another node): one line naming the namespace and the way out,
        where a RuntimeError traceback named this broker's own data dir as the one
        served (tester B, session 40)."""
        namespace = namespace_for(self.options.data_dir, self.options.cluster_name)
        given = (f"--cluster-name {self.options.cluster_name}" if self.options.cluster_name
                 else f"the path of --data-dir {self.options.data_dir}")
        return InvalidConfigError(
            f"another broker already serves the Ray namespace {namespace} (named by {given}) "
            f"in this Ray cluster (waited {limits.CONTROLLER_NAME_WAIT_S:g} s for it to "
            f"go); start this one with a --cluster-name of its own")

    def abandon_start(self, error: BaseException) -> None:
        """After ``start`` raised ``error`` (server process, main thread): stop what it
        started for a configuration error (a port in use found once the shards run),
        and remove the data dir if this start created it and nothing runs on it any
        more. A retry with corrected options then starts afresh: the metadata.json this
        start wrote would otherwise pin its shard count (--shards applies to a new data
        dir only). A data dir that was there is left as it is; so is one that Ray may
        still write (the process reaper ends Ray's processes at exit), whose logs may
        say why the start failed."""
        release_ports(self._held_ports)
        if self.controller is not None and isinstance(error, InvalidConfigError):
            self.stop(before_unlock=self._remove_fresh_data_dir)
        elif not self._ray_started:
            self._release_tier_claim()
            try:
                self._remove_fresh_data_dir()
            finally:
                self._lock.release()

    def _remove_fresh_data_dir(self) -> None:
        """Remove the data dir if this start created it (with the lock held: no other
        server can have begun using it)."""
        if self._fresh_data_dir and self._locked:
            shutil.rmtree(self.options.data_dir, ignore_errors=True)
            log.info("removed %s, which this failed start created, so that a corrected "
                     "start begins afresh", self.options.data_dir)

    def stop(self, grace_period_s: float = limits.SHUTDOWN_GRACE_PERIOD_S,
             before_unlock=None) -> bool:
        """Stop taking requests, flush and fsync every log, stop the actors, then Ray;
        make the data dir's ray dir private again (make_ray_dir_private) and remove the
        sockets of Ray's and of the shards (remove_ray_sockets, cluster_keys.remove_ipc_dir),
        so that a stopped data dir copies whole; run ``before_unlock`` (if given) and release the data dir's lock (server process,
        main thread). False if a shard could not save its files (a StorageError: a disk
        gone read-only or full, the user's to fix), said in one line: no traceback, and
        each partition's log is recovered, its indexes rebuilt, at the next start. If a
        shard could not flush for another reason (it is dead), raises that error, after
        stopping everything; a controller already gone (the whole process group got the
        signal) is logged."""
        saved = True
        try:
            if self.kafka is not None:
                self.kafka.stop()
            if self.router is not None:
                self.router.stop()
            if self.controller is not None:
                try:
                    if not self.controller.shutdown(grace_period_s):
                        log.warning("the controller was gone before it could flush the "
                                    "shards (did the whole process group get the signal?); "
                                    "each shard's log is recovered at its next start")
                except StorageError as exc:
                    log.error("a shard could not save its files on shutdown: %s (each "
                              "partition's log is recovered, and its indexes rebuilt, at "
                              "the next start)", _one_line(exc))
                    saved = False
                finally:
                    self.controller.kill()
                    _end_shards()
        finally:   # a shard that never served must not keep Ray or the lock alive
            self._release_tier_claim()   # (its shards have stopped deleting)
            _shutdown_ray()
            if self._ray_started and not self.options.ray_address:
                make_ray_dir_private(self.options.data_dir / RAY_DIR)
                remove_ray_sockets(self.options.data_dir / RAY_DIR)
            if self._ipc_dir is not None:   # no shard binds there any more
                remove_ipc_dir(self._ipc_dir)
            try:
                if before_unlock is not None:
                    before_unlock()
            finally:
                self._lock.release()
        return saved


def make_ray_dir_private(ray_dir: Path) -> None:
    """Make ``ray_dir`` (the embedded Ray's temp dir) as private as the data dir again,
    once Ray has stopped. Ray makes its temp dir 0777 not only in ray.init (undone
    after it, ``_start_ray``) but in every worker process that starts
    (ray._common.utils.try_to_create_directory, made for a /tmp/ray every user
    shares): a shard actor started after the start, so a stop of a broker of 4 shards,
    left it 0777 in each run. A directory already gone is fine; one that cannot be
    changed is logged (a start makes it private again). Server process, main thread."""
    try:
        os.chmod(ray_dir, DATA_DIR_MODE)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot make %s private again (mode %o) after Ray stopped: %s", ray_dir,
                    DATA_DIR_MODE, exc.strerror or exc)


def _one_line(exc: BaseException) -> str:
    """An error's message, its first line only (Ray may append its own traceback)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _shutdown_ray() -> None:
    """``ray.shutdown()``; a file it cannot remove or write (its session files on a disk
    gone read-only or full) is one line, not a traceback: Ray's processes are ended
    all the same, and the session directory is pruned at a later start."""
    import ray

    try:
        ray.shutdown()
    except OSError as exc:
        log.error("Ray could not clean up its session files on shutdown: %s%s",
                  exc.strerror or exc, f": {exc.filename}" if exc.filename else "")


@contextlib.contextmanager
def option_os_errors(option: str, value):
    """An OSError from using an option's value (a data dir that cannot be made, an
    address in use or not this machine's) as InvalidConfigError naming the option and
    the value: the user's to fix, said in one line. Any other exception passes as it is."""
    try:
        yield
    except FileExistsError as exc:   # mkdir of a path a file holds: say what it is
        raise InvalidConfigError(f"{option} {value}: {exc.filename or value} is a file, not a "
                                 f"directory") from None
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.filename is not None and str(exc.filename) != str(value):
            why = f"{why}: {exc.filename}"
        raise InvalidConfigError(f"{option} {value}: {why}") from None


def hold_listen_ports(options: ServeOptions, kafka=None) -> list[socket.socket]:
    """A socket bound to each TCP address the server will listen on (--listen,
    --kafka-listen, --metrics-host/--metrics-port; ``kafka``: its checked options),
    held until ``release_ports`` just before the listeners bind them (server process,
    main thread). An address in use, not this machine's, or named by two options is
    InvalidConfigError naming the option and the value, before anything is created.
    SO_REUSEADDR, as ZeroMQ's and the HTTP server's own sockets have it: a port whose
    last connections linger in TIME_WAIT is free, one another socket listens on is
    not (Linux refuses that bind whatever the option). Bound, not listening: until
    the broker serves, a connection there is refused as before (a readiness probe
    that connects, deploy/kuberay-raycluster.yaml, must not find it open early), and
    a program that binds without SO_REUSEADDR cannot take the port meanwhile (one
    that sets it can, and its listener then fails as before). An address whose
    host does not resolve here is left to its listener's bind, which says why.
    --console-listen is not among them: a console that cannot start is survived
    (``_start_console``)."""
    from plinth.client.connection import tcp_host_port

    addresses = []
    listen = tcp_host_port(options.listen)
    if listen is not None:
        addresses.append(("--listen", options.listen, *listen))
    if kafka is not None:
        from plinth.router.kafka.service import parse_host_port

        addresses.append(("--kafka-listen", options.kafka_listen,
                          *parse_host_port(kafka.listen, "--kafka-listen")))
    if options.metrics_port is not None:
        addresses.append(("--metrics-port", options.metrics_port, options.metrics_host,
                          options.metrics_port))
    held: list[socket.socket] = []
    named: list[tuple[str, object, tuple]] = []   # option, value, bound address
    try:
        for option, value, host, port in addresses:
            with option_os_errors(option, value):
                sock = _bound_socket(host.strip("[]"), port)
            if sock is None:
                continue
            held.append(sock)
            _refuse_shared_port(option, value, sock.getsockname(), named)
            named.append((option, value, sock.getsockname()))
    except BaseException:
        release_ports(held)
        raise
    return held


def _refuse_shared_port(option: str, value, address: tuple, named: list) -> None:
    """InvalidConfigError if ``address`` is one another option's listener would bind
    too (the same port, on the same address or either on every interface): two bound
    sockets with SO_REUSEADDR do not refuse each other until one listens."""
    everywhere = ("0.0.0.0", "::")
    for other_option, other_value, other in named:
        if other[1] == address[1] and (other[0] == address[0] or other[0] in everywhere
                                       or address[0] in everywhere):
            raise InvalidConfigError(f"{option} {value}: Address already in use (by "
                                     f"{other_option} {other_value})")


def _bound_socket(host: str, port: int) -> socket.socket | None:
    """A socket bound to ``host:port`` (an IPv4 address first, as ZeroMQ binds one;
    "*" or "": every interface); None for port 0 (any free port: nothing to hold) or a
    host that does not resolve. OSError if it cannot bind."""
    if port == 0:
        return None
    try:
        found = socket.getaddrinfo(None if host in ("*", "") else host, port,
                                   type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return None
    family, kind, proto, _, address = min(found, key=lambda f: f[0] != socket.AF_INET)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def release_ports(held: list[socket.socket]) -> None:
    """Close the sockets ``hold_listen_ports`` holds (none connected: no TIME_WAIT)."""
    while held:
        held.pop().close()


# The directories in the data dir a start creates files in (when they are there), and
# the files it replaces; each shard's directory too. The lock file is the lock's.
WRITTEN_DIRS = ("ray", "logs", "shards", "sockets")
REPLACED_FILES = (METADATA_FILE, RAY_ADDRESS_FILE)


def check_writable(data_dir: Path) -> None:
    """StorageError naming the path, before Ray starts, if a start could not create a
    file in the data dir or in one of its directories a start writes in (WRITTEN_DIRS,
    each shard's), or could not replace one of REPLACED_FILES. Root's writes are
    refused by a read-only mount (the lock's open says so first) and by an immutable
    directory or file (``chattr +i``): there the first refused write was ray.address's,
    after Ray had started, a 40-line PermissionError traceback. Each directory is tried
    with a file made and removed at once. Server process, main thread, lock held."""
    shards_dir = data_dir / "shards"
    directories = [data_dir, *(data_dir / name for name in WRITTEN_DIRS)]
    if shards_dir.is_dir():
        directories.extend(sorted(path for path in shards_dir.iterdir() if path.is_dir()))
    for directory in directories:
        if directory.is_dir() and not directory.is_symlink():
            _try_creating_in(data_dir, directory)
    for name in REPLACED_FILES:
        path = data_dir / name
        if path.is_file() and not os.access(path, os.W_OK):
            raise StorageError(
                f"--data-dir {data_dir}: {path} cannot be replaced (read-only or immutable: "
                f"see lsattr {path}); a start rewrites it. Run chattr -i {path}, or remount "
                f"its file system read-write")


def _try_creating_in(data_dir: Path, directory: Path) -> None:
    """Create and remove a file in ``directory``, or raise check_writable's refusal."""
    probe = directory / f".plinth-write-check-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        os.unlink(probe)
    except OSError as exc:
        fix = (f"free space or inodes on its file system (df -h, df -i {directory})"
               if exc.errno in (errno.ENOSPC, errno.EDQUOT) else
               f"Check lsattr -d {directory} (chattr -i), its mode and owner, and that its "
               f"file system is mounted read-write")
        raise StorageError(
            f"--data-dir {data_dir}: no file can be created in {directory} "
            f"({exc.strerror or exc}, errno {exc.errno}); a start writes there. "
            f"{fix[0].upper()}{fix[1:]}") from None


def check_free_space(data_dir: Path, free_bytes_min: int) -> None:
    """StorageError if the data dir's file system has less than ``free_bytes_min``
    free (--data-dir-free-bytes-min): Ray's session files (under the data dir) could
    not be written, and Ray then fails after a long wait with a traceback that names
    no disk. The error says what may be removed without losing a record, and how to
    start anyway: a disk the broker's own records filled is freed by deleting topics
    or records, which needs a running broker."""
    free_bytes = shutil.disk_usage(data_dir).free
    if free_bytes >= free_bytes_min:
        return
    raise StorageError(
        f"--data-dir {data_dir}: its file system has {free_bytes} bytes free, under the "
        f"{free_bytes_min} a start needs (Ray's session files, the logs). Free some space: "
        f"{_reclaimable(data_dir)} hold no record; or start with a lower "
        f"--data-dir-free-bytes-min (Ray may then fail for want of space) and delete topics "
        f"or records (plinth topic delete, plinth topic delete-records), or lower "
        f"retention.bytes")


def _full_disk_refusal(data_dir: Path, free_bytes_min: int,
                       exc: Exception) -> StorageError | None:
    """The one-line StorageError for a Ray start that failed (``exc``) on a data dir
    whose file system is full (an ENOSPC, or under DATA_DIR_FREE_BYTES_MIN free: a start
    --data-dir-free-bytes-min let through), naming the file system, its free bytes
    and what to free; None if the disk is not why. Before: Ray waited out ~30 s for a
    file it could not write and died in a 40-line traceback naming no disk. Server
    process, main thread."""
    try:
        free_bytes = shutil.disk_usage(data_dir).free
    except OSError:
        return None
    no_space = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    if not no_space and free_bytes >= limits.DATA_DIR_FREE_BYTES_MIN:
        return None
    return StorageError(
        f"--data-dir {data_dir}: Ray could not start ({_one_line(exc)}), and the data "
        f"dir's file system, mounted at {_mount_point(data_dir)}, has {free_bytes} bytes "
        f"free (--data-dir-free-bytes-min {free_bytes_min} let it try; by default a start "
        f"asks for {limits.DATA_DIR_FREE_BYTES_MIN}, for Ray's session files and the logs). Free "
        f"some space there: {_reclaimable(data_dir)} hold no record")


def _mount_point(path: Path) -> Path:
    """The mount point of the file system ``path`` is on."""
    path = Path(path).resolve()
    while not os.path.ismount(path):
        path = path.parent
    return path


def _reclaimable(data_dir: Path) -> str:
    """What under ``data_dir`` holds no record, with its size: old Ray sessions, rotated
    logs, the copies recovery cut (``*.cut-*``) and logs set aside (``*-orphan``)."""
    kinds = (("old Ray sessions", sorted((data_dir / "ray").glob("session_2*"))[:-1]),
             ("rotated logs", list((data_dir / "logs").glob("*.log.*"))),
             ("copies recovery cut (*.cut-*)", list((data_dir / "shards").glob("*/*/*.cut-*"))),
             ("logs set aside (*-orphan)", list((data_dir / "shards").glob("*/*-orphan"))))
    found = [f"{kind} ({_bytes_under(paths)} bytes)" for kind, paths in kinds if paths]
    return ", ".join(found) if found else "no file Plinth knows to be spare; the files " \
        "outside the data dir"


def _bytes_under(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        files = path.rglob("*") if path.is_dir() else [path]
        total += sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink())
    return total


def _start_metrics(controller: ControllerHandle, port: int | None, host: str,
                   router=None, broker_wide: bool = True, kafka=None,
                   tier_claim=None) -> None:
    """The Prometheus endpoint on ``host:port``, if a port was given; with the
    error replies and refusals of ``router`` (this process's) beside the shards'
    errors, and the error answers of ``kafka`` (its KafkaService, if any).
    ``broker_wide``: the shards' and partitions' series too (plinth serve's; a
    plinth router's exports its own router's alone: control/metrics.py), and
    ``tier_claim`` (ClaimKeeper.state), the server's claim on its tier store."""
    if port is None:
        return
    from plinth.control.metrics import start_metrics_server

    security = None if router is None else router.security
    with option_os_errors("--metrics-port", port):
        start_metrics_server(controller, port, host,
                             router_refusals=None if security is None else security.refusals,
                             router="" if router is None else router.listen,
                             router_errors=None if router is None else router.errors,
                             router_memory=_memory_bytes(router, kafka),
                             tier_claim=tier_claim,
                             broker_wide=broker_wide,
                             kafka=None if kafka is None else (
                                 kafka.error_counts(), "%s:%d" % kafka.address))


def _memory_bytes(router, kafka):
    """What this process's router and Kafka listener hold against their budgets, by
    kind (Router.memory_bytes, KafkaService.memory_bytes), for the metrics endpoint."""
    if router is None:
        return None
    if kafka is None:
        return router.memory_bytes
    return lambda: {**router.memory_bytes(), **kafka.memory_bytes()}


def _end_shards() -> None:
    """End every shard actor of this broker (they are detached: they would outlive
    the server). The controller's shutdown ends them; this catches those it could
    not (it was dead, restarting, or did not answer). Waits at most
    SHUTDOWN_SHARD_SWEEP_S: a Ray that is stopping too may not answer at all."""
    sweep = threading.Thread(target=_sweep_shards, name="plinth-shard-sweep", daemon=True)
    sweep.start()
    sweep.join(limits.SHUTDOWN_SHARD_SWEEP_S)
    if sweep.is_alive():
        log.warning("Ray did not list this broker's actors within %.0f s (is it stopping "
                    "too?); the process reaper ends any shard actor left",
                    limits.SHUTDOWN_SHARD_SWEEP_S)


def _sweep_shards() -> None:
    from plinth.shards.shard_handle import ShardHandle

    try:
        ended = ShardHandle.kill_all()
    except Exception:   # Ray itself is unreachable: nothing more to end through it
        log.exception("could not end the broker's shard actors")
        return
    if ended:
        log.warning("ended shard actors the controller did not: %s", ", ".join(ended))


def _this_node():
    """Pin the controller to the server's own node, where Ray also restarts it after
    its process died. The shard actors are detached and outlive it, but the
    controller's lifetime is its server's: a controller left to the scheduler could
    land on a worker node and share that node's fate instead of the server's."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def raise_open_file_limit(who: str) -> None:
    """Raise this process's soft limit on open files to its hard one, as each shard
    raises its own (file_budget.raise_soft_limit) and Go's runtime does for every
    program: the router holds a file per client connection (ZeroMQ's and the Kafka
    listener's, up to KAFKA_CONNECTIONS_MAX), and a soft limit of 1,024, common by
    default, is reached long before the hard one (often 524,288). Logged if raised.
    The processes started after it (Ray's) inherit it. Main thread, at the start."""
    before, after = file_budget.raise_soft_limit()
    if after != before:
        log.info("%s: open files limit %d (was %d)", who, after, before)


def serve(options: ServeOptions, ready=print) -> int:
    """Run the broker until SIGTERM or SIGINT; returns the exit code."""
    server = Server(options)
    try:
        report = server.start()
    except Exception as exc:
        server.abandon_start(exc)
        raise
    tune_data_path_process(who="plinth serve",   # the router runs: see process_tuning.py
                           oom_score_adj=limits.ROUTER_OOM_SCORE_ADJ)
    stop = _stop_on_signal()
    reloads = _reloads(server.router.security, server.kafka)
    hangup = _reload_on_hangup()
    console = _start_console(options, ready)
    try:
        _say_ready_once_every_shard_serves(server, report, ready)
        _wait_for(stop, hangup, reloads)
        log.info("shutting down")
    finally:
        if console is not None:
            console.stop()
    return 0 if server.stop() else 1


def _start_console(options: ServeOptions, ready):
    """The console child (client/console/child.py), kept running (started again if it
    ends), or None: not asked for, not possible (a CurveZMQ broker: the console
    needs a key of its own, so it is run with ``plinth console``), or it failed to
    start, which is logged once, on stderr, and survived."""
    if options.console_listen is None:
        return None
    if options.curve_secret_key is not None:
        log.warning("no console: the broker uses CurveZMQ, and the console needs a client "
                    "key of its own; run plinth console --curve-key-file ... beside it")
        return None
    from plinth.client.console.child import ConsoleChild

    console = ConsoleChild.start(options.listen, options.console_listen)
    if console.problem:
        log.warning("%s", console.problem)   # on stderr, once (not also beside ready)
        return None
    ready(f"console: {console.url}")
    console.keep_running()
    return console


def _say_ready_once_every_shard_serves(server: Server, report: StartReport, ready) -> None:
    """Print ``plinth ready`` when every shard serves; until then the broker serves the
    partitions of the shards that do, says which shards do not and why, and checks
    again every NOT_SERVING_RECHECK_INTERVAL_S. It keeps waiting rather than exit: in a cluster a
    shard is down while its node is, and the other nodes' partitions should not go
    down with it; a health check that waits for ``ready`` sees the broker is not whole."""
    kafka = "" if server.kafka is None else " and %s:%d (Kafka)" % server.kafka.address
    line = (f"plinth ready: listening on {server.options.listen}{kafka} "
            f"(data dir {server.options.data_dir})")
    if not report.not_serving:
        ready(line)
        return

    def wait_then_say_ready(report: StartReport) -> None:
        said: dict[str, str] = {}
        while report.not_serving:
            for shard_id, why in sorted(report.not_serving.items()):
                if said.get(shard_id) != why:   # say each reason once, not every few seconds
                    ready(f"plinth not ready: {shard_id} is not serving: {why}")
            said = report.not_serving
            time.sleep(limits.NOT_SERVING_RECHECK_INTERVAL_S)
            try:
                report = server.controller.start_report()
            except BrokerError as exc:   # the controller is busy or restarting: ask again
                log.warning("cannot ask the controller which shards serve: %s", exc)
        ready(line)

    threading.Thread(target=wait_then_say_ready, args=(report,), daemon=True,
                     name="ready-when-whole").start()


def _stop_on_signal() -> threading.Event:
    """The event SIGTERM and SIGINT set from now on. Installed after Ray started
    (ray.init sets its own SIGTERM handler, which exits with status 15 without
    stopping anything) and before ``ready`` is said, so a supervisor that stops
    the process as soon as it is ready gets a clean stop."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _reloads(security, kafka) -> list[Callable[[], str | None]]:
    """What SIGHUP reloads: the router's authorized keys and ACL (``security``,
    router/security.py, with CurveZMQ keys) and the Kafka listener's SASL users file
    (``kafka``, router/kafka/service.py, with --kafka-sasl-users). Each logs what it
    did, or why it kept what was in force."""
    found = [] if security is None else [security.reload]
    if kafka is not None and kafka.options.sasl_users is not None:
        found.append(kafka.reload_users)
    return found


def _reload_on_hangup() -> threading.Event:
    """The event SIGHUP sets from now on: ``_wait_for`` then reloads what there is to
    reload (``_reloads``), so a revoked key or SASL password is cut off without a
    restart, or says there is nothing. SIGHUP never ends the broker: an operator
    used to `kill -HUP` for a reload must not stop it, nor may a shell that was
    closed (and a SIGHUP ignored by nohup would have hidden the signal)."""
    hangup = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: hangup.set())
    return hangup


def _wait_for(stop: threading.Event, hangup: threading.Event | None = None,
              reloads: list = ()) -> None:
    """Until ``stop`` is set; each time ``hangup`` is, run each of ``reloads`` (on
    this, the main thread: not in the signal handler, which may interrupt logging;
    each swaps what it reloaded whole, so the threads serving clients read it
    without a lock), or say there is nothing to reload."""
    # Waits in slices: a signal handler runs only between bytecodes of the main thread.
    while not stop.is_set():
        if hangup is None:
            stop.wait(1.0)
        elif hangup.wait(1.0):
            hangup.clear()
            if not reloads:
                log.info("SIGHUP: nothing to reload (no --curve-secret-key keys or ACL, no "
                         "--kafka-sasl-users file); the broker runs on")
            for reload in reloads:   # each file on its own: one refused keeps only its own
                reload()


@dataclass
class RouterOptions:
    ray_address: str | None    # None: the embedded Ray of the server on data_dir
    cluster_name: str | None   # None: that server's (namespace_for its data dir)
    listen: str = limits.BROKER_URL_DEFAULT
    curve_secret_key: Path | None = None
    authorized_keys: Path | None = None
    acl_file: Path | None = None
    allow_insecure: bool = False
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    cluster_key_file: Path | None = None   # the server's <data dir>/cluster.key_secret
    data_dir: Path | None = None           # the server's, to read that file from
    # The store the broker is expected to tier to (None: not checked). The router
    # reads nothing from object storage; see check_tier_store.
    tier_url: str | None = dataclasses.field(default=None, repr=False)   # may hold secrets
    kafka_listen: str | None = None        # as ServeOptions'
    kafka_advertised: str | None = None
    kafka_auto_create_topics: bool = False
    kafka_tls_cert: Path | None = None
    kafka_tls_key: Path | None = None
    kafka_sasl_users: Path | None = None
    kafka_connections_max: int | None = None

    def tier_store(self) -> str | None:
        """The store --tier-url names (remote_store.store_identity), or None. Raises
        InvalidConfigError for a URL ``plinth serve`` would refuse (memory:// too)."""
        if self.tier_url is None:
            return None
        return ServeOptions(data_dir=Path("."), tier_url=self.tier_url).tier_options().store

    def namespace(self) -> str:
        """The broker's Ray namespace: by its --cluster-name, else (a server on
        --data-dir with its own Ray) the one its data dir gives. InvalidConfigError
        when neither says which broker: a Ray cluster may hold several."""
        if self.cluster_name:
            return f"plinth-{self.cluster_name}"
        if self.ray_address is None and self.data_dir is not None:
            return namespace_for(self.data_dir)
        raise InvalidConfigError("--ray-address needs --cluster-name (the broker's "
                                 "plinth serve --cluster-name): a Ray cluster may hold several")

    def which_broker(self) -> str:
        """The broker, for messages: "cluster NAME", or "data dir DIR"."""
        return f"cluster {self.cluster_name}" if self.cluster_name else f"data dir {self.data_dir}"

    def security(self):
        return ServeOptions(data_dir=Path("."), listen=self.listen,
                            curve_secret_key=self.curve_secret_key,
                            authorized_keys=self.authorized_keys, acl_file=self.acl_file,
                            allow_insecure=self.allow_insecure).security()


def check_tier_store(wanted: str | None, serving: str | None, cluster_name: str) -> None:
    """A ``plinth router --tier-url`` naming store ``wanted`` joins a broker whose shards
    tier to ``serving`` (both store identities; None: no --tier-url): InvalidConfigError,
    naming both, unless they are the same or the router was given none. A deploy
    config that sets one URL for the server and its routers (PLINTH_TIER_URL) thus
    fails at the router's start when they diverge, not on a read."""
    if wanted is None or wanted == serving:
        return
    if serving is None:
        raise InvalidConfigError(
            f"--tier-url names {wanted}, but the broker {cluster_name!r} has no tiered "
            f"storage (its plinth serve was given no --tier-url): give the server that "
            f"URL, or drop it here (a router reads nothing from object storage)")
    raise InvalidConfigError(
        f"--tier-url names {wanted}, but the broker {cluster_name!r} tiers to {serving}: "
        f"give the router and the server the same store")


def security_required(options: ServeOptions) -> tuple[str, ...]:
    """The security options of ``plinth serve`` that every ``plinth router`` joining it
    must be given too (recorded by the controller, which a router asks): a router
    reaches every shard with the cluster's key whatever its own options, so one
    without them would be a front door that skips them. A CurveZMQ broker's Kafka
    listeners need SASL (as its own does: service.py)."""
    kafka_sasl = options.kafka_sasl_users is not None or options.curve_secret_key is not None
    return tuple(option for option, given in (
        ("--curve-secret-key", options.curve_secret_key is not None),
        ("--acl", options.acl_file is not None),
        ("--kafka-sasl-users", kafka_sasl),
        ("--kafka-tls-cert", options.kafka_tls_cert is not None)) if given)


def check_router_build(server_version: str | None, broker: str) -> None:
    """InvalidConfigError, naming both versions, for a ``plinth router`` of another build
    than its server's (``server_version``: None from a server before 0.2.0): their Ray
    calls and the shards' sockets are the build's own, and an older router's calls
    failed as TypeErrors deep in its start (tester U, session 38)."""
    if server_version == VERSION:
        return
    server = f"Plinth {server_version}" if server_version else "a Plinth before 0.2.0"
    raise InvalidConfigError(
        f"this plinth router is Plinth {VERSION}, and the server of the broker ({broker}) "
        f"is {server}: a router joins only a server of its own build. Run the router "
        f"from the server's installation (or upgrade both: README, Upgrading)")


def check_router_security(options: RouterOptions, required: tuple[str, ...], broker: str) -> None:
    """InvalidConfigError, naming what is missing and what the broker requires, for a
    ``plinth router`` whose security options are weaker than its broker's (``required``:
    ``security_required`` of its plinth serve). The Kafka listener's options count
    only with ``--kafka-listen``."""
    kafka = options.kafka_listen is not None
    missing = [names for option, names, given in (
        ("--curve-secret-key", "--curve-secret-key and --authorized-keys",
         options.curve_secret_key is not None),
        ("--acl", "--acl", options.acl_file is not None),
        ("--kafka-sasl-users", "--kafka-sasl-users", not kafka or options.kafka_sasl_users is not None),
        ("--kafka-tls-cert", "--kafka-tls-cert and --kafka-tls-key",
         not kafka or options.kafka_tls_cert is not None)) if option in required and not given]
    if not missing:
        return
    zmq_side = [option for option in required if not option.startswith("--kafka")]
    kafka_side = [option for option in required if option.startswith("--kafka")]
    needs = ", ".join(zmq_side)
    if kafka_side:
        kafka_needs = "with --kafka-listen, " + ", ".join(kafka_side)
        needs = f"{needs} (and {kafka_needs})" if needs else kafka_needs
    raise InvalidConfigError(
        f"the broker ({broker}) requires of every router {needs}; this router has no "
        f"{', no '.join(missing)}, so it would serve the broker's topics without them. "
        f"Start it with the same options as the broker's plinth serve")


def run_router(options: RouterOptions, ready=print) -> int:
    """``plinth router``: one more router for a running broker, until SIGTERM."""
    raise_open_file_limit("plinth router")
    security = options.security()
    kafka = _kafka_options(options)
    tier_store = options.tier_store()   # a bad URL fails before Ray starts
    if options.ray_address is None and options.data_dir is None:
        raise InvalidConfigError("give --data-dir (the data dir of a plinth serve on this "
                                 "machine) or --ray-address and --cluster-name")
    namespace = options.namespace()
    ray_address = options.ray_address or embedded_ray_address(options.data_dir)
    cluster_keys = _cluster_keys_from_files(options)   # a bad file fails before Ray starts
    if options.ray_address is None:
        _use_embedded_ray_settings(options.data_dir / RAY_TOKEN_FILE, joining=True)
    import ray

    from plinth.router.router import Router

    join_ray(ray_address, namespace, "--ray-address" if options.ray_address else
             f"--data-dir {options.data_dir}: its server's Ray at")
    node_address = ray.util.get_node_ip_address()

    kafka_service = None

    def announce(found: ControllerHandle) -> None:
        # The server restarted: a new controller has the name; tell it about us.
        found.router_started(options.listen, node_address, _advertised(kafka_service))

    try:
        controller = ControllerHandle.find(on_rediscovered=announce)
    except ValueError:
        raise InvalidConfigError(
            f"no broker ({options.which_broker()}) runs in the Ray cluster at {ray_address} "
            f"(start one with plinth serve --cluster-name)") from None
    check_router_build(controller.build_version(), options.which_broker())
    check_router_security(options, controller.security_required(), options.which_broker())
    if tier_store is not None:
        check_tier_store(tier_store, controller.tier_store(),
                         options.cluster_name or str(options.data_dir))
    router = Router(options.listen, controller, security=security,
                    cluster_keys=cluster_keys or _cluster_keys_from_broker(controller))
    with option_os_errors("--listen", options.listen):
        router.start(controller.routing())
    tune_data_path_process(who="plinth router",   # see process_tuning.py
                           oom_score_adj=limits.ROUTER_OOM_SCORE_ADJ)
    with option_os_errors("--kafka-listen", options.kafka_listen):
        kafka_service = _start_kafka(kafka, router, namespace, security, options.data_dir)
    announce(controller)
    _start_metrics(controller, options.metrics_port, options.metrics_host, router,
                   broker_wide=False, kafka=kafka_service)
    stop = _stop_on_signal()
    reloads = _reloads(security, kafka_service)
    hangup = _reload_on_hangup()
    shown = "" if kafka_service is None else " and %s:%d (Kafka)" % kafka_service.address
    ready(f"plinth router ready: listening on {options.listen}{shown} "
          f"({options.which_broker()})")
    _wait_for(stop, hangup, reloads)
    if kafka_service is not None:
        kafka_service.stop()
    router.stop()
    try:
        controller.router_stopped(options.listen)
    except BrokerError as exc:   # the server is gone too: nobody to tell
        log.warning("could not tell the controller this router stopped: %s", exc)
    ray.shutdown()
    return 0



def _cluster_keys_from_files(options: RouterOptions) -> ClusterKeys | None:
    """The key pair a ``plinth router`` reaches the shards with: from
    ``--cluster-key-file``, else from the server's ``--data-dir``, else None."""
    if options.cluster_key_file is not None:
        return ClusterKeys.load(options.cluster_key_file)
    if options.data_dir is not None:
        return ClusterKeys.load(options.data_dir / CLUSTER_KEY_FILE)
    return None


def _cluster_keys_from_broker(controller: ControllerHandle) -> ClusterKeys:
    """For a router on a node without the key file: the controller's copy, through
    Ray, whose token already guards every actor and so every shard."""
    keys = controller.cluster_keys()
    if keys is None:
        raise InvalidConfigError("the broker has no cluster key pair; pass --cluster-key-file")
    return keys
