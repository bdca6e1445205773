"""plinth/server.py's ServeOptions: which internal hop a server takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from plinth.server import ServeOptions


@pytest.mark.parametrize("internal_hop, ray_address, taken", [
    ("auto", None, "ipc"),                  # embedded: every hop stays on this machine
    ("auto", "127.0.0.1:6379", "curve"),    # a Ray cluster: hops may cross nodes
    ("curve", None, "curve"),
    ("ipc", None, "ipc"),
])
def test_auto_takes_ipc_with_the_embedded_ray_and_curve_in_a_ray_cluster(internal_hop, ray_address,
                                                                          taken):
    options = ServeOptions(data_dir=Path("d"), internal_hop=internal_hop, ray_address=ray_address)
    assert options.resolved_internal_hop() == taken
