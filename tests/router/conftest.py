"""Fixtures for router tests: a real Router between real client sockets and fake shards and
controller (tests/router/fakes.py), or real shards (ShardServer, no Ray); CurveZMQ on when
asked, with key files as ``plinth keygen`` writes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zmq
import zmq.auth

from plinth.router.router import Router
from plinth.router.security import Security
from tests.router.fakes import Client, CurveKeys, FakeController, FakeShard
from tests.support import curve_key_pair, free_port


@dataclass
class RouterRig:
    router: Router
    url: str
    controller: FakeController
    shards: dict[str, FakeShard]
    context: zmq.Context
    curve: CurveKeys | None = None
    clients: list[Client] = field(default_factory=list)

    def client(self, receive_hwm: int | None = None, routing_id: bytes | None = None) -> Client:
        """A client's DEALER (with an authorized key when CurveZMQ is on)."""
        self.clients.append(Client(self.url, receive_hwm, self.curve, routing_id))
        return self.clients[-1]

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.router.stop()
        for shard in self.shards.values():
            shard.close()
        if self.context is not zmq.Context.instance():
            self.context.destroy(linger=0)


@pytest.fixture(scope="session")
def curve_key_files(tmp_path_factory) -> tuple[Path, Path, CurveKeys]:
    """(server secret key file, authorized keys directory, a client's keys)."""
    keys = tmp_path_factory.mktemp("keys")
    authorized = keys / "authorized"
    authorized.mkdir()
    server_public_file, server_secret_file = curve_key_pair(keys, "server")
    client_public_file, client_secret_file = curve_key_pair(authorized, "client")
    server_public, _ = zmq.auth.load_certificate(server_public_file)
    client_public, client_secret = zmq.auth.load_certificate(client_secret_file)
    return Path(server_secret_file), authorized, CurveKeys(client_public, client_secret,
                                                           server_public)


@pytest.fixture
def router_rig(curve_key_files):
    """``router_rig(shards={id: FakeShard kwargs}, topics=..., owners=..., ranges=...)``
    starts fake shards, a fake controller that knows them, and a Router in front.
    ``addresses={id: address}`` adds shards running elsewhere (real ShardServers);
    ``curve=True`` makes the router a CurveZMQ server (its own ZeroMQ context, with the
    ZAP handler) and its clients CurveZMQ clients."""
    rigs: list[RouterRig] = []

    def make(shards: dict[str, dict] | None = None, addresses: dict[str, str] | None = None,
             curve: bool = False, **controller_kwargs) -> RouterRig:
        fakes = {shard_id: FakeShard(shard_id, **kwargs)
                 for shard_id, kwargs in (shards or ({} if addresses else
                                                     {"shard-0": {}, "shard-1": {}})).items()}
        known = {shard_id: shard.address for shard_id, shard in fakes.items()}
        controller = FakeController({**known, **(addresses or {})}, **controller_kwargs)
        url = f"tcp://127.0.0.1:{free_port()}"
        security, keys, context = None, None, zmq.Context.instance()
        if curve:
            server_secret_file, authorized, keys = curve_key_files
            security, context = Security(server_secret_file, authorized), zmq.Context()
        router = Router(url, controller, context=context, security=security)
        router.start(controller.routing())
        rigs.append(RouterRig(router, url, controller, fakes, context, keys))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()
