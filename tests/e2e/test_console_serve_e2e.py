"""The console as a process: ``plinth console`` on its own, and the child ``plinth
serve`` starts beside the broker (its URL beside ``ready``, a taken port survived,
and no console outliving its server)."""

from __future__ import annotations

import signal
import socket
import sys
import urllib.error
import urllib.request

from tests.support import free_port, start_until_ready, unique_topic, wait_until

PLINTH = [sys.executable, "-m", "plinth.cli"]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def refuses_connections(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_serve_starts_the_console_and_prints_its_url_beside_ready(broker_factory):
    port = free_port()
    broker = broker_factory(extra_args=("--console-listen", f"127.0.0.1:{port}"))
    assert f"console: http://127.0.0.1:{port}/\n" in broker.output, broker.log()
    status, page = get(f"http://127.0.0.1:{port}/")
    assert status == 200 and "2/2</span> shards" in page


def test_the_console_ends_with_its_server_even_after_kill_9(broker_factory):
    port = free_port()
    broker = broker_factory(extra_args=("--console-listen", f"127.0.0.1:{port}"))
    assert get(f"http://127.0.0.1:{port}/topics")[0] == 200
    # When the server is SIGKILLed: the console's stdin ends, and it stops
    broker.kill()
    wait_until(lambda: refuses_connections(port), timeout_s=20)


def test_a_taken_console_port_is_a_warning_and_the_broker_serves_without_it(broker_factory):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        broker = broker_factory(extra_args=("--console-listen", f"127.0.0.1:{port}"))
    # Said once (in the log, on stderr), not once more beside ready on stdout
    said = [line for line in broker.output
            if f"the console did not start on 127.0.0.1:{port}" in line]
    assert len(said) == 1 and "--console-listen" in said[0], said
    from plinth import Admin

    with Admin(broker=broker.url) as admin:   # the broker serves
        admin.create_topic(unique_topic("noconsole"))


def test_console_listen_off_starts_no_console(broker_factory):
    broker = broker_factory(extra_args=("--console-listen", "off"))
    assert not any(line.startswith(("console:", "warning:")) for line in broker.output)


def test_plinth_console_serves_a_running_broker_until_sigterm(shared_broker):
    port = free_port()
    proc, output = start_until_ready(PLINTH + ["console", "--broker", shared_broker.url,
                                               "--listen", f"127.0.0.1:{port}"],
                                     "plinth console ready", timeout_s=60)
    try:
        assert f"plinth console ready: http://127.0.0.1:{port}/\n" in output
        for path in ("/", "/topics", "/static/htmx.min.js"):
            assert get(f"http://127.0.0.1:{port}{path}")[0] == 200, path
        status, page = get(f"http://127.0.0.1:{port}/topics/no-such-topic")
        assert status == 404 and "UnknownTopicError" in page and "Traceback" not in page
        # A request naming another host (a DNS-rebinding page) is not answered
        rebound = urllib.request.Request(f"http://127.0.0.1:{port}/topics",
                                         headers={"Host": f"evil.example:{port}"})
        try:
            urllib.request.urlopen(rebound, timeout=30)
            raise AssertionError("a request for another host was answered")
        except urllib.error.HTTPError as exc:
            assert exc.code == 421
        assert get(f"http://localhost:{port}/topics")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, "".join(output)


def test_plinth_console_on_a_taken_port_says_so_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        import subprocess

        result = subprocess.run(PLINTH + ["console", "--listen", f"127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"the console cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
