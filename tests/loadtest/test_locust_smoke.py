"""The Locust load test (loadtest/locustfile.py) as a CI smoke test.

Locust runs headless for a few seconds in a subprocess with a hard timeout;
its CSV statistics decide. The smoke check fails when no produce or no
fetch with records succeeded, when any request failed, or when Locust exits
non-zero; the second test points it at a port with no broker to show that
the check catches a load test that gets nothing done.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from tests.support import free_port, unique_topic

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtest" / "locustfile.py"
LOCUST_TIMEOUT_S = 60
USERS = 2                   # one ProducerUser and one ConsumerUser
AGGREGATED_TYPE = ""        # the CSV's "Aggregated" row has an empty Type


class LocustRun(NamedTuple):
    returncode: int
    topic: str
    rows: list[dict[str, str]]      # stats CSV rows, the Aggregated row left out
    log: str                        # Locust's stderr

    def successes(self, request_type: str) -> int:
        """Successful requests of a type; fetches only if they returned records."""
        return sum(int(row["Request Count"]) - int(row["Failure Count"]) for row in self.rows
                   if row["Type"] == request_type and row["Name"] == self.topic)

    def failures(self) -> int:
        return sum(int(row["Failure Count"]) for row in self.rows)


def run_locust(host: str, tmp_path: Path, run_time_s: int, env: dict[str, str]) -> LocustRun:
    topic = unique_topic("locust")
    prefix = tmp_path / "stats"
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
           "-u", str(USERS), "-r", str(USERS), "-t", f"{run_time_s}s", "--host", host,
           "--csv", str(prefix), "--only-summary", "--exit-code-on-error", "1"]
    env = dict(os.environ, PLINTH_TOPIC=topic, PLINTH_PARTITIONS="2", **env)
    # cwd: a locust.conf in the caller's directory must not change the run.
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=LOCUST_TIMEOUT_S)
    with open(f"{prefix}_stats.csv", newline="") as stats_file:
        rows = [row for row in csv.DictReader(stats_file) if row["Type"] != AGGREGATED_TYPE]
    run = LocustRun(proc.returncode, topic, rows, proc.stderr)
    records_line = next((line for line in run.log.splitlines() if "plinth records" in line), "")
    print(f"locust exit {run.returncode}: produce ok {run.successes('produce')}, "
          f"fetch ok {run.successes('fetch')}, failed {run.failures()}; {records_line}")
    return run


def smoke_problems(run: LocustRun) -> list[str]:
    """What makes the smoke test fail; empty when the load test did its work."""
    problems = [f"no {kind} request succeeded" for kind in ("produce", "fetch")
                if run.successes(kind) == 0]
    if run.failures():
        problems.append(f"{run.failures()} requests failed")
    if run.returncode != 0:
        problems.append(f"locust exited with {run.returncode}")
    return problems


def test_locust_produces_and_fetches_against_a_live_broker(shared_broker, tmp_path):
    # Given a broker, When Locust runs one producer and one consumer for 5 s
    run = run_locust(shared_broker.url, tmp_path, run_time_s=5, env={})
    # Then both made progress and nothing failed
    assert smoke_problems(run) == [], run.log[-4000:]


def test_locust_producers_keep_to_the_rate_given(shared_broker, tmp_path):
    # Given a rate of 4 produce requests a second per producer (one producer here)
    # When Locust runs for 5 s
    run = run_locust(shared_broker.url, tmp_path, run_time_s=5,
                     env={"PLINTH_PRODUCE_REQUESTS_PER_S": "4", "PLINTH_BATCH_RECORDS": "10"})
    # Then it sent about 20, not as many as acknowledgements allow (hundreds)
    assert smoke_problems(run) == [], run.log[-4000:]
    assert 5 <= run.successes("produce") <= 4 * 5 + 4


def test_locust_smoke_check_fails_when_no_broker_answers(tmp_path):
    # Given a port nobody listens on, When Locust runs against it with short timeouts
    dead_url = f"tcp://127.0.0.1:{free_port()}"
    run = run_locust(dead_url, tmp_path, run_time_s=3, env={"PLINTH_REQUEST_TIMEOUT_MS": "500"})
    # Then every request failed, and the smoke check says so
    assert run.successes("produce") == run.successes("fetch") == 0
    assert run.failures() > 0
    assert run.returncode != 0
    assert "no produce request succeeded" in smoke_problems(run)


def test_a_host_that_is_not_tcp_host_port_ends_locust_in_one_line_not_a_traceback(tmp_path):
    # When Locust is pointed at an http:// URL, as a web load test would be
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "1",
           "-r", "1", "-t", "2s", "--host", "http://127.0.0.1:23400", "--only-summary"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path,
                          timeout=LOCUST_TIMEOUT_S)
    # Then it exits 1 at once, saying what the host must be, with no traceback (ZeroMQ's
    # "Protocol not supported" came from every user)
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert ("error: --host 'http://127.0.0.1:23400' is not tcp://HOST:PORT"
            in proc.stderr.splitlines()[-1])
    assert "Traceback" not in proc.stderr
