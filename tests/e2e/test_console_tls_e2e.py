"""The console beyond loopback, as an operator runs it: ``plinth console`` bound to
every interface, with an auth file made by ``plinth console-auth`` and a TLS
certificate. Requests go to 127.0.0.1 only (the bind is what is beyond loopback)."""

from __future__ import annotations

import base64
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from plinth import Admin
from tests.router.kafka.self_signed import self_signed_certificate
from tests.support import free_port, start_until_ready, unique_topic

PLINTH = [sys.executable, "-m", "plinth.cli"]


def auth_file_made_by_the_cli(tmp_path) -> tuple:
    """An auth file of a user (alice, password pw) and a token; and the token."""
    user = subprocess.run(PLINTH + ["console-auth", "user", "alice", "--password-stdin"],
                          input="pw\n", capture_output=True, text=True, timeout=60, check=True)
    made = subprocess.run(PLINTH + ["console-auth", "token", "ci"], capture_output=True,
                          text=True, timeout=60, check=True)
    path = tmp_path / "console.auth"
    path.write_text(user.stdout + made.stdout)
    path.chmod(0o600)   # the console refuses an auth file others may read
    return path, made.stderr.strip().rsplit(" ", 1)[1]


def get(url: str, context: ssl.SSLContext | None, authorization: str | None = None):
    request = urllib.request.Request(url, headers={"Authorization": authorization}
                                     if authorization else {})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def tls_console(shared_broker, tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    auth, token = auth_file_made_by_the_cli(tmp_path)
    port = free_port()
    proc, output = start_until_ready(
        PLINTH + ["console", "--broker", shared_broker.url, "--listen", f"0.0.0.0:{port}",
                  "--auth-file", str(auth), "--tls-cert", str(cert), "--tls-key", str(key)],
        "plinth console ready", timeout_s=60)
    try:
        yield {"base": f"https://127.0.0.1:{port}", "token": token, "output": output,
               "port": port, "context": ssl.create_default_context(cafile=str(cert))}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(output)


def test_a_console_beyond_loopback_answers_over_https_to_logged_in_users_only(
        tls_console, shared_broker):
    base, context = tls_console["base"], tls_console["context"]
    assert f"plinth console ready: https://0.0.0.0:{tls_console['port']}/\n" \
        in tls_console["output"]
    topic = unique_topic("tls-console")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(topic, 2)
    # Without credentials, or with a wrong password: 401 and a login box
    for authorization in (None, "Basic " + base64.b64encode(b"alice:wrong").decode(),
                          "Bearer not-the-token"):
        status, body = get(base + "/topics", context, authorization)
        assert status == 401 and "log in" in body, (authorization, status)
    # The user's password and the token get the pages
    status, body = get(base + "/", context, "Basic " + base64.b64encode(b"alice:pw").decode())
    assert status == 200 and "Overview" in body
    status, body = get(base + f"/topics/{topic}", context, f"Bearer {tls_console['token']}")
    assert status == 200 and f"Topic {topic}" in body


def test_a_console_with_tls_does_not_answer_plain_http(tls_console):
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{tls_console['port']}/", timeout=30)


def test_a_console_beyond_loopback_without_a_login_or_tls_refuses_to_start(tmp_path):
    auth, _ = auth_file_made_by_the_cli(tmp_path)
    for extra, missing in (([], "--auth-file and --tls-cert/--tls-key"),
                           (["--auth-file", str(auth)], "--tls-cert/--tls-key")):
        result = subprocess.run(PLINTH + ["console", "--listen", f"0.0.0.0:{free_port()}",
                                          *extra], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, result
        assert f"without {missing}:" in result.stderr and "Traceback" not in result.stderr
