"""plinth/server.py's join_ray: a --ray-address that is no address, or where no Ray
listens, is refused in one line naming the option, at once (Ray's own join retries
for minutes). No Ray is started: each refusal comes before ray.init."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from plinth import limits
from plinth.cli import main
from plinth.errors import InvalidConfigError, UnavailableError
from plinth.server import join_ray
from tests.support import free_port


@pytest.mark.parametrize("address", ["not-an-address", "127.0.0.1", "127.0.0.1:", ":6379",
                                     "127.0.0.1:port", "127.0.0.1:70000", "127.0.0.1:0"])
def test_a_ray_address_that_is_no_host_and_port_is_refused_naming_the_option(address):
    with pytest.raises(InvalidConfigError, match=f"--ray-address '{address}' is not HOST:PORT"):
        join_ray(address, "plinth-test")


def test_an_address_where_nothing_listens_is_refused_at_once_saying_no_ray_is_there():
    address = f"127.0.0.1:{free_port()}"
    began_s = time.monotonic()
    with pytest.raises(UnavailableError, match=f"--ray-address {address}: no Ray there "
                                               f"\\(Connection refused"):
        join_ray(address, "plinth-test")
    assert time.monotonic() - began_s < limits.RAY_ADDRESS_CONNECT_WAIT_S


def test_plinth_router_with_a_bad_ray_address_prints_one_line_and_no_traceback():
    with socket.socket() as taken:   # the router's own port is never reached
        taken.bind(("127.0.0.1", 0))
        listen = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
    result = CliRunner().invoke(main, ["router", "--ray-address", "not-an-address",
                                       "--cluster-name", "x", "--listen", listen])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: InvalidConfigError: --ray-address 'not-an-address' is not HOST:PORT (the Ray "
        "head's GCS address, which ray start --head prints) or auto"]


@pytest.mark.parametrize("args, says", [
    ([], "give --data-dir (the data dir of a plinth serve on this machine) or --ray-address "
         "and --cluster-name"),
    (["--ray-address", "127.0.0.1:6379"], "--ray-address needs --cluster-name"),
])
def test_plinth_router_that_is_not_told_which_broker_says_what_to_give(args, says):
    result = CliRunner().invoke(main, ["router", *args, "--listen", "tcp://127.0.0.1:1"])
    assert result.exit_code == 1 and says in result.output, result.output


def test_plinth_router_on_a_data_dir_where_no_server_runs_says_so(tmp_path):
    result = CliRunner().invoke(main, ["router", "--data-dir", str(tmp_path),
                                       "--listen", "tcp://127.0.0.1:1"])
    assert result.exit_code == 1
    assert (f"--data-dir {tmp_path}: no plinth serve with its own Ray runs there (it writes "
            f"ray.address once its Ray is up)") in result.output, result.output


JOIN_A_SILENT_PORT = """
import os, sys
os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)   # a user's shell, without it
from plinth import limits
limits.RAY_JOIN_WAIT_S = 3.0
from plinth.server import join_ray
join_ray(sys.argv[1], "plinth-test")
print("joined")
"""


def test_a_join_that_ray_retries_for_minutes_ends_after_the_wait_in_one_line_naming_the_fix():
    # Given something on loopback that accepts TCP connections and never answers as a GCS
    # (as a local-only cluster's port looks to Ray outside its local-only mode)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        # When a process joins it (Ray retries for minutes, heeding no SIGTERM)
        began_s = time.monotonic()
        joined = subprocess.run([sys.executable, "-c", JOIN_A_SILENT_PORT, address],
                                capture_output=True, text=True, timeout=120)
    # Then it ends after the wait, exit status 1, its last line naming the option, the
    # wait and the variable a local-only cluster needs
    assert joined.returncode == 1, joined.stderr
    assert time.monotonic() - began_s < 60
    assert joined.stderr.splitlines()[-1] == (
        f"error: UnavailableError: --ray-address {address}: Ray did not let this process join "
        f"within 3 s (something accepts connections there, but no Ray head answered); a "
        f"local-only Ray cluster (its nodes on 127.0.0.1, started with "
        f"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) is joined only in that mode: run plinth with "
        f"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 too (without it Ray swaps 127.0.0.1 for this "
        f"machine's address, where nothing listens)")
