"""The cluster's key pair file and its ZAP handler's answers (plinth/cluster_keys.py)."""

from __future__ import annotations

import socket
import stat

import pytest
import zmq
import zmq.auth
import zmq.utils.z85

from plinth.cluster_keys import (CLUSTER_KEY_FILE, ClusterAuthenticator, ClusterKeys,
                                 load_or_create, make_ipc_dir, remove_ipc_dir)
from plinth.errors import InvalidConfigError


def test_the_first_start_creates_a_key_file_only_its_owner_can_read_and_later_starts_reuse_it(tmp_path):
    # Given an empty data dir, When the server loads its keys twice
    first = load_or_create(tmp_path)
    second = load_or_create(tmp_path)
    # Then the file is mode 0600, and both starts have the same key pair
    assert stat.S_IMODE((tmp_path / CLUSTER_KEY_FILE).stat().st_mode) == 0o600
    assert first == second and len(first.public_key) == len(first.secret_key) == 40
    # And plinth keygen's reader (zmq.auth) reads the same pair from it
    assert zmq.auth.load_certificate(str(tmp_path / CLUSTER_KEY_FILE)) == (
        first.public_key, first.secret_key)


def test_a_public_key_file_is_refused_naming_it(tmp_path):
    # Given a keygen pair, When a router is given its public half
    public_file, _ = zmq.auth.create_certificates(str(tmp_path), "c")
    # Then it refuses, naming the file
    with pytest.raises(InvalidConfigError, match="holds no secret key"):
        ClusterKeys.load(public_file)


def test_the_secret_key_never_shows_in_a_repr():
    keys = ClusterKeys.generate()
    assert keys.secret_key.decode() not in repr(keys)


def zap_request(mechanism: bytes, *credentials: bytes) -> list[bytes]:
    return [b"1.0", b"7", b"plinth-cluster", b"10.0.0.9", b"", mechanism, *credentials]


def test_the_zap_handler_admits_only_the_cluster_public_key_over_curve():
    # Given the cluster's keys and a stranger's
    keys = ClusterKeys.generate()
    stranger = ClusterKeys.generate()
    handler = ClusterAuthenticator(zmq.Context.instance(), keys, "shard-0")
    cluster_key = zmq.utils.z85.decode(keys.public_key)
    # Then only the cluster's key over CURVE gets a 200, echoing the request id
    assert handler.answer(zap_request(b"CURVE", cluster_key))[1:3] == [b"7", b"200"]
    assert handler.answer(zap_request(b"CURVE", zmq.utils.z85.decode(stranger.public_key)))[2] == b"400"
    assert handler.answer(zap_request(b"NULL"))[2] == b"400"
    assert handler.answer(zap_request(b"PLAIN", b"user", b"password"))[2] == b"400"
    assert handler.answer([b"0.9", b"8"])[1:3] == [b"8", b"400"]
    assert handler.refused == 3   # peers refused (the malformed request came from no peer)


def _left_socket(path):
    """A Unix socket file as a process that bound it and died leaves it."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
    return path


def test_a_stop_removes_the_shards_sockets_and_their_directory(tmp_path):
    # Given the sockets directory of a broker whose shards bound their sockets there
    ipc_dir = make_ipc_dir(tmp_path)
    for name in ("shard-0", "shard-0.direct", "shard-1"):
        _left_socket(tmp_path / "sockets" / name)
    # When they are removed at its stop, Then the directory is gone with them
    remove_ipc_dir(ipc_dir)
    assert not (tmp_path / "sockets").exists()
    # And a second removal (nothing there) and a start after it are fine
    remove_ipc_dir(ipc_dir)
    assert make_ipc_dir(tmp_path) == ipc_dir and (tmp_path / "sockets").is_dir()


def test_a_file_not_a_socket_keeps_the_sockets_directory(tmp_path):
    ipc_dir = make_ipc_dir(tmp_path)
    _left_socket(tmp_path / "sockets" / "shard-0")
    (tmp_path / "sockets" / "notes.txt").write_text("not the broker's")
    remove_ipc_dir(ipc_dir)
    assert [p.name for p in (tmp_path / "sockets").iterdir()] == ["notes.txt"]
