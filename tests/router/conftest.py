"""Fixtures for router tests: a real Router between real client sockets and fake
shards and controller (tests/router/fakes.py); no Ray."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import zmq

from plinth.router.router import Router
from tests.router.fakes import Client, FakeController, FakeShard
from tests.support import free_port


@dataclass
class RouterRig:
    router: Router
    url: str
    controller: FakeController
    shards: dict[str, FakeShard]
    clients: list[Client] = field(default_factory=list)

    def client(self, receive_hwm: int | None = None) -> Client:
        self.clients.append(Client(self.url, receive_hwm))
        return self.clients[-1]

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.router.stop()
        for shard in self.shards.values():
            shard.close()


@pytest.fixture
def router_rig():
    """``router_rig(shards={id: FakeShard kwargs}, topics=..., owners=..., ranges=...)``
    starts fake shards, a fake controller that knows them, and a Router in front."""
    rigs: list[RouterRig] = []

    def make(shards: dict[str, dict] | None = None, **controller_kwargs) -> RouterRig:
        fakes = {shard_id: FakeShard(shard_id, **kwargs)
                 for shard_id, kwargs in (shards or {"shard-0": {}, "shard-1": {}}).items()}
        controller = FakeController({shard_id: shard.address for shard_id, shard in fakes.items()},
                                    **controller_kwargs)
        url = f"tcp://127.0.0.1:{free_port()}"
        router = Router(url, controller, context=zmq.Context.instance())
        router.start(controller.routing())
        rigs.append(RouterRig(router, url, controller, fakes))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()
