"""plinth serve's start and stop around what it creates: the listen ports taken before
anything else, a failed first start leaving no data dir, Ray's session directories
pruned, a shard's StorageError at shutdown said in one line, and a data dir a start
could not write in refused in one line before Ray starts, and a Ray start that failed
on a full disk said in one line naming the disk (plinth/server.py)."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import namedtuple
from pathlib import Path

import pytest
from click.testing import CliRunner

from plinth import limits
from plinth import server as server_module
from plinth.cli import main
from plinth.errors import InvalidConfigError, StorageError, UnavailableError
from plinth.server import (Server, ServeOptions, hold_listen_ports, prune_ray_sessions,
                           release_ports, remove_ray_sockets)
from tests.support import fill_file_system


def _listening(reuse: bool = False) -> socket.socket:
    taken = socket.socket()
    if reuse:   # as the listeners of an earlier broker had it (ZeroMQ's, the HTTP server's)
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    return taken


def _options(port: int, option: str) -> tuple[ServeOptions, object, str]:
    """ServeOptions naming ``port`` for ``option``, the Kafka options, the value shown."""
    free = f"tcp://127.0.0.1:{_free_port()}"
    if option == "--listen":
        return ServeOptions(Path("d"), listen=f"tcp://127.0.0.1:{port}"), None, \
            f"tcp://127.0.0.1:{port}"
    if option == "--metrics-port":
        return ServeOptions(Path("d"), listen=free, metrics_port=port), None, str(port)
    options = ServeOptions(Path("d"), listen=free, kafka_listen=f"127.0.0.1:{port}")
    return options, options.kafka_options(), f"127.0.0.1:{port}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("option", ["--listen", "--metrics-port", "--kafka-listen"])
def test_a_port_another_socket_listens_on_is_refused_naming_the_option_and_the_value(option):
    # Given a port another socket listens on
    with _listening() as taken:
        options, kafka, shown = _options(taken.getsockname()[1], option)
        # When the server takes its ports, Then it refuses, naming the option and the value
        with pytest.raises(InvalidConfigError,
                           match=f"^{option} {shown}: Address already in use$"):
            hold_listen_ports(options, kafka)


def test_a_port_whose_last_connection_lingers_in_time_wait_is_taken():
    # Given a port whose listener accepted a connection and closed it first (the side that
    # closes first keeps it in TIME_WAIT), then stopped listening: a broker just stopped
    listener = _listening(reuse=True)
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()
    client.recv(1)   # the FIN arrived: the accepted side is in FIN_WAIT_2/TIME_WAIT
    client.close()
    listener.close()
    assert _time_wait_on(port), "no connection of the port in TIME_WAIT: nothing tested"
    # When the server takes it, Then it gets it (SO_REUSEADDR, as ZeroMQ's own bind)
    held = hold_listen_ports(ServeOptions(Path("d"), listen=f"tcp://127.0.0.1:{port}"))
    assert [sock.getsockname()[1] for sock in held] == [port]
    release_ports(held)


def _time_wait_on(port: int) -> bool:
    """Whether a TCP connection of local port ``port`` is in TIME_WAIT (/proc/net/tcp)."""
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return any(int(row[1].split(":")[1], 16) == port and row[3] == "06" for row in rows)


def test_ports_are_held_closed_until_released_and_two_options_naming_one_are_refused():
    port = _free_port()
    # Given the port of a server's --listen held
    held = hold_listen_ports(ServeOptions(Path("d"), listen=f"tcp://127.0.0.1:{port}"))
    # Then a program that binds without SO_REUSEADDR cannot take it meanwhile, and a
    # connection is refused (a readiness probe must not find it open before the broker)
    with socket.socket() as other:
        with pytest.raises(OSError, match="Address already in use"):
            other.bind(("127.0.0.1", port))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    # And once released the listener's own bind takes it
    release_ports(held)
    assert held == []
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
    # And a --metrics-port equal to the --listen port is refused, on every interface too
    for host in ("127.0.0.1", "0.0.0.0"):
        with pytest.raises(InvalidConfigError, match=f"^--metrics-port {port}: Address already "
                                                     f"in use \\(by --listen tcp://"):
            hold_listen_ports(ServeOptions(Path("d"), listen=f"tcp://127.0.0.1:{port}",
                                           metrics_port=port, metrics_host=host))
    # And nothing of a refused attempt stays bound
    release_ports(hold_listen_ports(ServeOptions(Path("d"), listen=f"tcp://127.0.0.1:{port}")))


def test_plinth_serve_on_a_port_in_use_fails_before_it_creates_the_data_dir(tmp_path):
    # Given a port another socket listens on
    with _listening() as taken:
        port = taken.getsockname()[1]
        # When plinth serve is told to serve metrics there
        result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "d"),
                                           "--listen", f"tcp://127.0.0.1:{_free_port()}",
                                           "--metrics-port", str(port),
                                           "--console-listen", "off"])
    # Then it fails in one line naming the option, and created nothing (Ray never
    # started: it would have taken seconds and made the data dir)
    assert not (tmp_path / "d").exists()
    assert result.exit_code == 1
    assert (f"error: InvalidConfigError: --metrics-port {port}: Address already in use"
            in result.output)


def test_plinth_serve_raises_its_soft_open_file_limit_to_the_hard_one_before_anything_starts(
        tmp_path):
    # Given a soft limit on open files below the hard one (1,024 is a common default:
    # a router holds a file per client connection)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip(f"the hard RLIMIT_NOFILE {hard} leaves nothing to raise")

    def lower_soft_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    # When plinth serve starts (and stops at its free-space check, before Ray)
    result = subprocess.run(
        [sys.executable, "-c", "from plinth.cli import main; main()", "serve",
         "--data-dir", str(tmp_path / "d"), "--listen", f"tcp://127.0.0.1:{_free_port()}",
         "--console-listen", "off", "--data-dir-free-bytes-min", str(1 << 50)],
        capture_output=True, text=True, timeout=180, preexec_fn=lower_soft_limit)
    # Then it raised its soft limit to the hard one first, and said so
    assert result.returncode == 1, result.stderr
    assert f"plinth serve: open files limit {hard} (was 512)" in result.stderr, result.stderr


def test_a_second_server_on_a_data_dir_with_the_same_port_is_told_which_server_holds_it(
        tmp_path):
    # Given a data dir a server holds, and the port it listens on
    from plinth.data_dir_lock import DataDirLock

    (tmp_path / "d").mkdir()
    holder = DataDirLock(tmp_path / "d")
    holder.acquire()
    try:
        with _listening() as taken:
            port = taken.getsockname()[1]
            # When the same plinth serve command runs again
            result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "d"),
                                               "--listen", f"tcp://127.0.0.1:{port}",
                                               "--console-listen", "off"])
    finally:
        holder.release()
    # Then it is told the data dir is in use, and by which process (not only the port)
    assert result.exit_code == 1
    assert f"{tmp_path / 'd'} is in use by another Plinth server (process {os.getpid()} " \
        in result.output


def _full_disk(monkeypatch) -> None:
    """The data dir's file system reports 4 KiB free: serve fails after taking the lock
    (disk_usage is the kernel's answer; a real full file system needs a mount)."""
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**30, 10 * 2**30, 4096))


def test_a_failed_first_start_removes_the_data_dir_it_created(tmp_path, monkeypatch):
    # Given a data dir that does not exist, on a file system too full to start on
    _full_disk(monkeypatch)
    # When plinth serve fails there (after creating the dir and taking its lock)
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "d"),
                                       "--console-listen", "off"])
    # Then the dir it created is gone, so a corrected retry starts afresh
    assert result.exit_code == 1 and "StorageError" in result.output
    assert not (tmp_path / "d").exists()
    assert tmp_path.exists()


def test_a_failed_start_keeps_a_data_dir_that_was_there(tmp_path, monkeypatch):
    # Given a data dir that exists, with a file of the operator's
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes").write_text("mine")
    _full_disk(monkeypatch)
    # When plinth serve fails there
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "d"),
                                       "--console-listen", "off"])
    # Then the dir and what it held are left as they were
    assert result.exit_code == 1 and "StorageError" in result.output
    assert (tmp_path / "d" / "notes").read_text() == "mine"


def _session(ray_dir: Path, name: str, mtime: int) -> Path:
    path = ray_dir / name
    (path / "logs").mkdir(parents=True)
    (path / "logs" / "raylet.out").write_text("x")
    os.utime(path, (mtime, mtime))
    return path


def test_the_oldest_ray_sessions_are_removed_and_the_newest_kept(tmp_path, caplog):
    # Given five session directories of earlier starts, the latest link and another file
    ray_dir = tmp_path / "ray"
    sessions = [_session(ray_dir, f"session_2026-12-0{i}_10-00-00_00000{i}_{100 + i}",
                         1_700_000_000 + i) for i in range(1, 6)]
    (ray_dir / "session_latest").symlink_to(sessions[-1])
    (ray_dir / "other").write_text("kept")
    # When they are pruned to two
    with caplog.at_level(logging.INFO, logger="plinth.server"):
        removed = prune_ray_sessions(ray_dir, 2)
    # Then the three oldest are gone, each said at INFO, and the rest is left
    assert removed == sessions[:3]
    assert sorted(p.name for p in ray_dir.iterdir()) == sorted(
        [sessions[3].name, sessions[4].name, "session_latest", "other"])
    assert [r.levelno for r in caplog.records] == [logging.INFO] * 3
    assert str(sessions[0]) in caplog.records[0].getMessage()
    # And a start keeps the limit, the session it is about to add included
    assert limits.RAY_SESSIONS_KEPT_MAX >= 2


@pytest.fixture
def short_dir():
    """A directory whose path leaves room for a socket's name (tmp_path is too long)."""
    path = Path(tempfile.mkdtemp(prefix="pl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_sockets_of_stopped_ray_sessions_are_removed_and_their_logs_kept(short_dir):
    # Given two sessions whose raylet and object store left their sockets (one a
    # crash's), a log file beside them, and the latest link to one
    ray_dir = short_dir / "ray"
    made = []
    for name in ("session_2026-12-01_10-00-00_000001_101", "session_2026-12-02_10-00-00_000002_102"):
        (ray_dir / name / "sockets").mkdir(parents=True)
        (ray_dir / name / "logs").mkdir()
        (ray_dir / name / "logs" / "raylet.out").write_text("kept")
        for socket_name in ("raylet", "plasma_store"):
            made.append(_left_socket(ray_dir / name / "sockets" / socket_name))
    (ray_dir / "session_latest").symlink_to(ray_dir / name)
    # When Ray has stopped and its sockets are removed
    assert remove_ray_sockets(ray_dir) == 4
    # Then no socket is left, and the rest is
    assert not any(path.exists() for path in made)
    assert sorted(str(p.relative_to(ray_dir)) for p in ray_dir.rglob("*")) == sorted(
        f"{name}{rest}" for name in ("session_2026-12-01_10-00-00_000001_101",
                                     "session_2026-12-02_10-00-00_000002_102")
        for rest in ("", "/sockets", "/logs", "/logs/raylet.out")) + [
        "session_latest"]


def _left_socket(path):
    """A Unix socket file as a process that bound it and died leaves it."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
    return path


def _no_ray(monkeypatch) -> None:
    """Server.stop without Ray: the session's Ray (tests/conftest.py ray_cluster) runs in
    this process, and ray.shutdown() here would end it under every later test."""
    monkeypatch.setattr(server_module, "_end_shards", lambda: None)
    monkeypatch.setattr(server_module, "_shutdown_ray", lambda: None)


class _Controller:
    """The controller's handle, its shutdown raising what a shard's stop raised."""

    def __init__(self, error: Exception):
        self.error = error
        self.killed = False

    def shutdown(self, grace_period_s: float) -> bool:
        raise self.error

    def kill(self) -> None:
        self.killed = True


def test_a_shard_that_cannot_save_its_files_on_shutdown_is_one_error_line(tmp_path, monkeypatch,
                                                                           caplog):
    # Given a server whose shard's index write failed on a read-only disk at shutdown
    _no_ray(monkeypatch)
    server = Server(ServeOptions(tmp_path / "d"))
    server.controller = _Controller(StorageError(
        "cannot write the indexes of /d/shards/shard-0/t-0/00000000000000000000.log: "
        "[Errno 30] Read-only file system: '/d/shards/shard-0/t-0/00000000000000000000.index.tmp'"))
    # When it stops
    with caplog.at_level(logging.INFO):
        saved = server.stop()
    # Then it says so in one line naming the file and the cause, stops the rest, and
    # reports it (serve then exits 1)
    assert saved is False and server.controller.killed
    [line] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.levelno == logging.ERROR and line.exc_info is None
    assert line.getMessage().startswith(
        "a shard could not save its files on shutdown: cannot write the indexes of "
        "/d/shards/shard-0/t-0/00000000000000000000.log: [Errno 30] Read-only file system")
    assert "rebuilt, at the next start" in line.getMessage()


def test_a_shard_that_died_before_its_shutdown_still_raises(tmp_path, monkeypatch):
    _no_ray(monkeypatch)
    server = Server(ServeOptions(tmp_path / "d"))
    server.controller = _Controller(UnavailableError("shard-0 is dead"))
    with pytest.raises(UnavailableError):
        server.stop()
    assert server.controller.killed


def _ray_must_not_start(options) -> None:
    raise AssertionError("Ray started: the start's checks let it")


def _as_an_earlier_start_left_it(data_dir: Path) -> None:
    """The files an earlier ``plinth serve`` made in ``data_dir`` before its Ray started
    (the lock file, the cluster keys, Ray's token, ray/, sockets/, a shard's directory),
    so that a start creates nothing there before Ray."""
    from plinth.cluster_keys import load_or_create, make_ipc_dir
    from plinth.data_dir_lock import DataDirLock
    from plinth.secret_files import load_or_create_secret

    lock = DataDirLock(data_dir)
    lock.acquire()
    load_or_create(data_dir)
    load_or_create_secret(data_dir / server_module.RAY_TOKEN_FILE, lambda: "0" * 64, "token")
    make_ipc_dir(data_dir)
    for directory in ("ray", "logs", "shards/shard-0"):
        (data_dir / directory).mkdir(parents=True, mode=0o700)
    lock.release()


@pytest.fixture
def immutable():
    """``immutable(path)``: ``chattr +i path`` (root's writes are refused there too),
    undone at the end."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("chattr +i needs root and e2fsprogs (CI runs as root)")
    made = []

    def make(path: Path) -> None:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip(f"{path}'s file system has no chattr +i")
        made.append(path)

    yield make
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def _refusal(data_dir: Path, directory: Path) -> str:
    return (f"--data-dir {data_dir}: no file can be created in {directory} (Operation not "
            f"permitted, errno 1); a start writes there. Check lsattr -d {directory} "
            f"(chattr -i), its mode and owner, and that its file system is mounted read-write")


def test_plinth_serve_on_an_immutable_data_dir_refuses_in_one_line_before_ray_starts(
        tmp_path, immutable):
    # Given a data dir an earlier start made, then made immutable (chattr +i: root's
    # writes are refused there, as anyone's in a directory without write permission)
    data_dir = tmp_path / "d"
    _as_an_earlier_start_left_it(data_dir)
    immutable(data_dir)
    # When plinth serve starts there (its own process: before the fix, its Ray started
    # and the start died on ray.address.tmp in a 40-line PermissionError traceback)
    result = subprocess.run(
        [sys.executable, "-c", "from plinth.cli import main; main()", "serve",
         "--data-dir", str(data_dir), "--listen", f"tcp://127.0.0.1:{_free_port()}",
         "--console-listen", "off"], capture_output=True, text=True, timeout=180)
    # Then it refuses in one line naming the data dir and the cause, and Ray never
    # started (no session of its in ray/)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: StorageError: {_refusal(data_dir, data_dir)}"]
    assert list((data_dir / "ray").glob("session_*")) == []


@pytest.mark.parametrize("where", ["ray", "logs", "shards/shard-0"])
def test_a_directory_of_the_data_dir_no_file_can_be_created_in_is_refused_before_ray_starts(
        tmp_path, immutable, monkeypatch, where):
    # Given a data dir an earlier start made, one of whose directories is immutable
    data_dir = tmp_path / "d"
    _as_an_earlier_start_left_it(data_dir)
    immutable(data_dir / where)
    _no_ray(monkeypatch)
    monkeypatch.setattr(server_module, "_start_ray", _ray_must_not_start)
    # When a server starts there / Then it is refused naming the directory, before Ray
    with pytest.raises(StorageError) as refused:
        Server(ServeOptions(data_dir, listen=f"tcp://127.0.0.1:{_free_port()}")).start()
    assert str(refused.value) == _refusal(data_dir, data_dir / where)


def test_a_metadata_file_that_cannot_be_replaced_is_refused_in_one_line_before_ray_starts(
        tmp_path, immutable, monkeypatch):
    # Given a data dir whose metadata.json is immutable
    from plinth.control.metadata import BrokerMetadata

    data_dir = tmp_path / "d"
    _as_an_earlier_start_left_it(data_dir)
    BrokerMetadata(shards=[], topics={}).save(data_dir / "metadata.json")
    immutable(data_dir / "metadata.json")
    _no_ray(monkeypatch)
    monkeypatch.setattr(server_module, "_start_ray", _ray_must_not_start)
    # When a server starts there / Then it is refused naming the file, before Ray
    with pytest.raises(StorageError, match=f"{data_dir / 'metadata.json'} cannot be "
                                           f"replaced \\(read-only or immutable"):
        Server(ServeOptions(data_dir, listen=f"tcp://127.0.0.1:{_free_port()}")).start()


@pytest.fixture
def full_fs():
    """A data dir an earlier start made, on a real 4 MiB tmpfs then filled to its last
    byte; mounted at a path short enough that Ray's session files go under it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount_point = Path(tempfile.mkdtemp(prefix="phd-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                   check=True)
    try:
        _as_an_earlier_start_left_it(mount_point / "d")
        fill_file_system(mount_point)
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
        os.rmdir(mount_point)


def test_plinth_serve_on_a_full_disk_it_was_told_to_try_refuses_in_one_line_naming_the_disk(
        full_fs):
    # Given a data dir on a file system with 0 bytes free
    data_dir = full_fs / "d"
    # When plinth serve starts there with --data-dir-free-bytes-min 0 (its own
    # process: Ray starts, and fails, waiting ~30 s for a file it cannot write)
    result = subprocess.run(
        [sys.executable, "-c", "from plinth.cli import main; main()", "serve",
         "--data-dir", str(data_dir), "--listen", f"tcp://127.0.0.1:{_free_port()}",
         "--console-listen", "off", "--data-dir-free-bytes-min", "0"],
        capture_output=True, text=True, timeout=300)
    # Then it fails in one line naming the data dir, its file system, its free bytes
    # and what to free, not a 40-line Ray traceback naming no disk
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: StorageError: --data-dir {data_dir}: Ray could not start (")
    assert (f"the data dir's file system, mounted at {full_fs}, has 0 bytes free "
            f"(--data-dir-free-bytes-min 0 let it try; by default a start asks for "
            f"{limits.DATA_DIR_FREE_BYTES_MIN}, for Ray's session files and the logs). "
            f"Free some space there: ") in line


def _ray_fails_with(error: Exception):
    def start_ray(options) -> None:
        raise error
    return start_ray


def test_an_enospc_from_the_ray_start_is_one_line_naming_the_disk(full_fs, monkeypatch):
    # Given a data dir on a full file system, and a Ray start the disk refuses
    data_dir = full_fs / "d"
    _no_ray(monkeypatch)
    monkeypatch.setattr(server_module, "_start_ray", _ray_fails_with(
        OSError(28, "No space left on device", str(data_dir / "ray.address.tmp"))))
    # When a server told to try starts there
    with pytest.raises(StorageError) as refused:
        Server(ServeOptions(data_dir, listen=f"tcp://127.0.0.1:{_free_port()}",
                            data_dir_free_bytes_min=0)).start()
    # Then the error names the file system and its free bytes
    assert str(refused.value).startswith(
        f"--data-dir {data_dir}: Ray could not start ([Errno 28] No space left on device: ")
    assert f"mounted at {full_fs}, has 0 bytes free" in str(refused.value)


def test_a_ray_start_failing_on_a_disk_with_room_is_not_blamed_on_the_disk(tmp_path, monkeypatch):
    # Given a data dir with room, and a Ray start that fails for another reason
    _as_an_earlier_start_left_it(tmp_path / "d")
    _no_ray(monkeypatch)
    monkeypatch.setattr(server_module, "_start_ray", _ray_fails_with(RuntimeError("GCS died")))
    # When a server starts there / Then Ray's own error passes as it is
    with pytest.raises(RuntimeError, match="^GCS died$"):
        Server(ServeOptions(tmp_path / "d", listen=f"tcp://127.0.0.1:{_free_port()}")).start()


def test_a_data_dir_out_of_inodes_is_refused_before_ray_starts_naming_free_space_not_chattr(
        tmp_path, monkeypatch):
    # Given a data dir an earlier start made, on a real tmpfs with no inode left
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=32", "tmpfs",
                    str(mount_point)], check=True)
    try:
        data_dir = mount_point / "d"
        _as_an_earlier_start_left_it(data_dir)
        with contextlib.suppress(OSError):   # ENOSPC: no inode left
            for i in range(64):
                (mount_point / f"empty-{i}").touch()
        _no_ray(monkeypatch)
        monkeypatch.setattr(server_module, "_start_ray", _ray_must_not_start)
        # When a server starts there / Then it is refused, saying what to free
        with pytest.raises(StorageError) as refused:
            Server(ServeOptions(data_dir, listen=f"tcp://127.0.0.1:{_free_port()}")).start()
        assert str(refused.value) == (
            f"--data-dir {data_dir}: no file can be created in {data_dir} (No space left on "
            f"device, errno 28); a start writes there. Free space or inodes on its file "
            f"system (df -h, df -i {data_dir})")
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
