"""The auth file and the 401 for requests without credentials."""

from __future__ import annotations

import base64

import pytest

from plinth.client.console.auth import AuthFile, hash_password, hash_token
from plinth.errors import InvalidConfigError

FAST = {"n": 2 ** 10, "r": 8, "p": 1}   # scrypt cheap enough for tests, same code path


def write_auth(tmp_path, *lines: str):
    path = tmp_path / "console.auth"
    path.write_text("# the console's users\n" + "\n".join(lines) + "\n")
    return path


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def test_a_user_logs_in_with_the_right_password_only(tmp_path):
    auth = AuthFile.load(write_auth(tmp_path, f"user alice {hash_password('s3cret', **FAST)}"))
    assert auth.check(basic("alice", "s3cret")) == "alice"
    assert auth.check(basic("alice", "s3cret")) == "alice"   # the cached path too
    assert auth.check(basic("alice", "wrong")) is None
    assert auth.check(basic("bob", "s3cret")) is None
    assert auth.check("Basic !!!not-base64") is None
    assert auth.check(None) is None


def test_a_token_logs_in_by_its_hash(tmp_path):
    auth = AuthFile.load(write_auth(tmp_path, f"token ci {hash_token('tok-123')}"))
    assert auth.check("Bearer tok-123") == "ci"
    assert auth.check("Bearer tok-124") is None


def test_the_file_stores_no_secret_in_the_clear(tmp_path):
    text = write_auth(tmp_path, f"user alice {hash_password('s3cret', **FAST)}",
                      f"token ci {hash_token('tok-123')}").read_text()
    assert "s3cret" not in text and "tok-123" not in text


@pytest.mark.parametrize("line, says", [
    ("user alice plain-password", "malformed hash"),
    ("admin alice x", "expected 'token NAME"),
    (f"token ci {hash_token('a')}\ntoken ci {hash_token('b')}", "appears twice"),
])
def test_a_bad_auth_file_is_refused_naming_the_file_and_line(tmp_path, line, says):
    path = write_auth(tmp_path, line)
    with pytest.raises(InvalidConfigError) as refused:
        AuthFile.load(path)
    assert str(path) in str(refused.value) and says in str(refused.value)


def test_an_empty_auth_file_is_refused(tmp_path):
    with pytest.raises(InvalidConfigError, match="nobody could log in"):
        AuthFile.load(write_auth(tmp_path))


def test_plinth_console_auth_prints_lines_the_file_accepts(tmp_path):
    from click.testing import CliRunner

    from plinth.cli import main

    user = CliRunner().invoke(main, ["console-auth", "user", "carol", "--password-stdin"],
                              input="pw\n")
    assert user.exit_code == 0, user.output
    made = CliRunner().invoke(main, ["console-auth", "token", "ci"])
    assert made.exit_code == 0, made.output
    # stdout is the line alone (`>> console.auth`); the token is on stderr only
    token = made.stderr.strip().rsplit(" ", 1)[1]
    assert token not in made.stdout
    auth = AuthFile.load(write_auth(tmp_path, user.stdout.strip(), made.stdout.strip()))
    assert auth.check(basic("carol", "pw")) == "carol"
    assert auth.check(f"Bearer {token}") == "ci"


@pytest.mark.parametrize("name", ["a b", "x:y", "", "n" * 65])
def test_a_name_the_file_cannot_hold_is_refused_before_any_password(name):
    from click.testing import CliRunner

    from plinth.cli import main

    result = CliRunner().invoke(main, ["console-auth", "user", name])
    assert result.exit_code == 1
    assert "InvalidConfigError" in result.output and "password" not in result.output.lower()


def test_a_user_name_with_a_colon_in_the_file_is_refused_naming_the_line(tmp_path):
    with pytest.raises(InvalidConfigError, match=r"console.auth:3: the name 'x:y'"):
        AuthFile.load(write_auth(tmp_path, f"user ok {hash_password('pw', **FAST)}",
                                 f"user x:y {hash_password('pw', **FAST)}"))


def test_an_unauthenticated_request_gets_401_and_a_logged_in_one_gets_through(tmp_path):
    from starlette.testclient import TestClient

    from plinth.client.console.app import create_app
    from plinth.client.console.config import ConsoleConfig

    # Given a console with an auth file (no broker needed: static files and 401s
    # are answered without one)
    path = write_auth(tmp_path, f"user alice {hash_password('pw', **FAST)}",
                      f"token ci {hash_token('tok')}")
    app = create_app(ConsoleConfig(broker="tcp://127.0.0.1:1", auth_file=path))
    with TestClient(app) as client:
        for url in ("/", "/topics", "/static/console.css", "/overview/stream"):
            refused = client.get(url)
            assert refused.status_code == 401, url
            assert refused.headers["www-authenticate"].startswith("Basic")
        assert client.get("/static/console.css", headers={"Authorization": basic("alice", "no")}
                          ).status_code == 401
        assert client.get("/static/console.css",
                          headers={"Authorization": basic("alice", "pw")}).status_code == 200
        assert client.get("/static/console.css",
                          headers={"Authorization": "Bearer tok"}).status_code == 200


# --- Failed logins, through a real console on a real socket ----------------------------

CONSOLE_PORT = 7903   # this test's range is 7900-7949


@pytest.fixture
def console_with_logins(tmp_path):
    """``plinth console`` on 127.0.0.1 with an auth file (alice, password pw; token
    tok), no broker (401s and static files need none); yields (base URL, its output
    lines, read as they come)."""
    import signal
    import sys

    from tests.support import start_until_ready

    path = write_auth(tmp_path, f"user alice {hash_password('pw', **FAST)}",
                      f"token ci {hash_token('tok')}")
    path.chmod(0o600)
    proc, output = start_until_ready(
        [sys.executable, "-m", "plinth.cli", "console", "--broker", "tcp://127.0.0.1:1",
         "--listen", f"127.0.0.1:{CONSOLE_PORT}", "--auth-file", str(path)],
        "plinth console ready", timeout_s=60)
    try:
        yield f"http://127.0.0.1:{CONSOLE_PORT}", output
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def get_status(base: str, authorization: str | None, source: str = "127.0.0.1") -> int:
    """The status of a GET of the console's stylesheet, sent from address ``source``."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30,
                                            source_address=(source, 0))
    try:
        connection.request("GET", "/static/console.css",
                           headers={"Authorization": authorization} if authorization else {})
        return connection.getresponse().status
    finally:
        connection.close()


def test_failed_logins_are_logged_once_per_address_naming_the_user_never_the_password(
        console_with_logins):
    from tests.support import wait_until

    base, output = console_with_logins
    # Given a client guessing alice's password 10 times, and a token 5 times, from 127.0.0.1
    for n in range(10):
        assert get_status(base, basic("alice", f"guess-{n}")) == 401
    for n in range(5):
        assert get_status(base, f"Bearer guess-{n}") == 401
    # And a browser's first request (no credentials) and a right login, which are no failure
    assert get_status(base, None) == 401
    assert get_status(base, "Bearer tok") == 200
    # When another address fails once (its line comes after every earlier one)
    assert get_status(base, basic("mallory", "x"), source="127.0.0.2") == 401
    wait_until(lambda: any("from 127.0.0.2" in line for line in output), timeout_s=30,
               explain=lambda: "".join(output))
    # Then 127.0.0.1's failures wrote one WARNING line, naming the address and the user
    failures = [line for line in output if "console login failed" in line]
    assert len(failures) == 2, "".join(output)
    assert "WARNING" in failures[0]
    assert "console login failed from 127.0.0.1: user 'alice' does not match" in failures[0]
    assert "console login failed from 127.0.0.2: user 'mallory' does not match" in failures[1]
    # And no password or token guessed is anywhere in the output
    assert "guess-" not in "".join(output)


def test_a_failed_logins_401_comes_late_without_holding_up_other_requests(console_with_logins):
    import time
    from concurrent.futures import ThreadPoolExecutor

    from plinth import limits

    base, _ = console_with_logins
    delay_s = limits.CONSOLE_LOGIN_FAILED_DELAY_MS / 1000
    # Given a console that has served a request (its first one sets up its thread pool)
    assert get_status(base, "Bearer tok") == 200
    # When a client tries 5 wrong tokens one after another, Then each 401 came no sooner
    # than the delay after the request
    started = time.monotonic()
    for n in range(5):
        assert get_status(base, f"Bearer one-by-one-{n}") == 401
    assert time.monotonic() - started >= 5 * delay_s
    # And when 16 wrong logins and a right one are sent at once
    failures = 16
    with ThreadPoolExecutor(failures + 1) as pool:
        started = time.monotonic()
        refused = [pool.submit(get_status, base, f"Bearer wrong-{n}") for n in range(failures)]
        admitted = pool.submit(get_status, base, "Bearer tok")
        statuses = [future.result() for future in refused]
        elapsed_s = time.monotonic() - started
    # Then every wrong one got its 401 and the right one its page, and the delays ran
    # side by side on the event loop (one after another they take 16 x 100 ms)
    assert statuses == [401] * failures and admitted.result() == 200
    assert elapsed_s < failures * delay_s, elapsed_s
