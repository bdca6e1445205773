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
