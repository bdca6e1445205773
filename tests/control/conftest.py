"""The ``brokers`` fixture of the controller's tests (see broker_without_ray.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from plinth.control.nodes import Node
from tests.control.broker_without_ray import Broker
from tests.in_process_shards import ONE_NODE


@pytest.fixture
def brokers(tmp_path):
    """``brokers(shard_count)`` starts a Broker on tmp_path/data (again: a restart,
    after the previous one's shards stopped); every shard is stopped at the end."""
    made: list[Broker] = []

    def start(shard_count: int | None = 2, nodes: list[Node] | None = ONE_NODE,
              data_dir: Path | None = None, **controller_options) -> Broker:
        for broker in made:   # a restart: the old shard processes are gone
            broker.shards.stop_all()
        broker = Broker(data_dir or tmp_path / "data", shard_count, nodes, **controller_options)
        made.append(broker)
        broker.controller.start()
        return broker

    yield start
    for broker in made:
        broker.shards.stop_all()
