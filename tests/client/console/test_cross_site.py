"""The console against other web sites (client/console/cross_site.py): no page of it
may be framed, and a change posted from anywhere but its own pages is refused and
changes nothing. Over a real broker, through Starlette's TestClient, with each
request's Origin and Referer headers set as a browser would send them."""

from __future__ import annotations

import html
import re

import pytest

from plinth.client.admin import Admin
from plinth.client.console.cross_site import add_frame_headers, origin_of
from tests.client.console.conftest import OWN_ORIGIN, console_client
from tests.support import unique_topic

OWN = {"Origin": OWN_ORIGIN}
# What a browser sends with a post that another site's page makes, and what a
# client sends that says nothing of where it comes from.
FOREIGN = [
    pytest.param({"Origin": "http://evil.example"}, "another site", id="another-site"),
    pytest.param({"Origin": "null"}, "another site", id="origin-null"),
    pytest.param({"Origin": "http://testserver:8080"}, "another site", id="another-port"),
    pytest.param({"Origin": "https://testserver"}, "another site", id="another-scheme"),
    pytest.param({"Referer": "http://evil.example/console.html"}, "Referer", id="referer-only"),
    pytest.param({}, "no Origin or Referer", id="neither"),
]


@pytest.fixture(scope="module")
def client(shared_broker):
    """A console client that sends no Origin of its own: each test says what it sends."""
    with console_client(shared_broker.url, origin=None) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def admin(shared_broker):
    with Admin(broker=shared_broker.url, request_timeout_ms=10_000) as admin:
        yield admin


def token_of(page) -> str:
    assert page.status_code == 200, page.text[:400]
    return html.unescape(re.search(r'name="token" value="([^"]*)"', page.text)[1])


def assert_refused_as_cross_site(response, phrase: str) -> None:
    assert response.status_code == 403, (response.status_code, response.text[:400])
    assert "not from this console" in response.text and phrase in html.unescape(response.text)
    assert 'name="token"' not in response.text


@pytest.mark.parametrize("headers, phrase", FOREIGN)
def test_a_change_posted_from_another_site_is_refused_and_changes_nothing(
        client, admin, headers, phrase):
    # Given a topic, an idle group, and each change's confirmation as the console's
    # own pages got it (a valid token: only where the post comes from is wrong)
    topic, made, group = unique_topic("xs"), unique_topic("xs-new"), unique_topic("xs-g")
    admin.create_topic(topic, 1, config={"retention.ms": "60000"})
    admin.reset_group_offsets(group, {(topic, 0): 0})
    create = {"name": made, "partitions": "1", "config": ""}
    create["token"] = token_of(client.post("/topics/new/confirm", data=create, headers=OWN))
    alter = {"config": "retention.ms=1"}
    alter["token"] = token_of(client.post(f"/topics/{topic}/alter/confirm", data=alter,
                                          headers=OWN))
    delete = {"confirm_name": topic, "token": token_of(client.get(f"/topics/{topic}/delete")),
              "topic_id": admin.describe_topic(topic).topic_id}
    dry_run = client.get(f"/groups/{group}/reset", params={"to": "latest", "topic": topic})
    reset = {"plan": f"{topic}:0=0", "token": token_of(dry_run)}
    delete_group = {"confirm_name": group,
                    "token": token_of(client.get(f"/groups/{group}/delete"))}
    # When each is posted from elsewhere
    for path, form in ((f"/topics/new", create), (f"/topics/{topic}/alter", alter),
                       (f"/topics/{topic}/delete", delete), (f"/groups/{group}/reset", reset),
                       (f"/groups/{group}/delete", delete_group)):
        # Then it is refused, saying why
        assert_refused_as_cross_site(client.post(path, data=form, headers=headers), phrase)
    # And nothing changed
    assert made not in admin.list_topics()
    assert admin.describe_topic(topic).config["retention.ms"] == "60000"
    assert admin.describe_group(group).committed == {(topic, 0): 0}


@pytest.mark.parametrize("headers, phrase", FOREIGN)
def test_another_site_gets_no_confirmation_page_to_click_through(client, headers, phrase):
    # The tester's report: a cross-site post to .../alter/confirm got a ready Apply form
    for path, form in (("/topics/new/confirm", {"name": unique_topic("xs"), "partitions": "1"}),
                       ("/topics/t1/alter/confirm", {"config": "retention.ms=1"})):
        assert_refused_as_cross_site(client.post(path, data=form, headers=headers), phrase)


@pytest.mark.parametrize("headers", [
    pytest.param(OWN, id="origin"),
    pytest.param({"Origin": "HTTP://TestServer:80"}, id="origin-default-port-and-case"),
    pytest.param({"Referer": f"{OWN_ORIGIN}/topics/x/alter/confirm"}, id="referer-only"),
])
def test_a_change_posted_from_the_consoles_own_pages_is_applied(client, admin, headers):
    # Given a topic and an alter confirmed on the console's page
    topic = unique_topic("xs-own")
    admin.create_topic(topic, 1, config={"retention.ms": "60000"})
    form = {"config": "retention.ms=120000"}
    form["token"] = token_of(client.post(f"/topics/{topic}/alter/confirm", data=form,
                                         headers=headers))
    # When it is applied from the same origin
    applied = client.post(f"/topics/{topic}/alter", data=form, headers=headers)
    # Then it is
    assert applied.status_code == 200 and applied.url.path == f"/topics/{topic}"
    assert admin.describe_topic(topic).config["retention.ms"] == "120000"


def assert_not_frameable(response) -> None:
    assert response.headers["x-frame-options"] == "DENY", response.url
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"], response.url


def test_every_response_forbids_framing(client, admin, monkeypatch):
    topic, group = unique_topic("xs-frame"), unique_topic("xs-frame-g")
    admin.create_topic(topic, 1)
    admin.reset_group_offsets(group, {(topic, 0): 0})
    # Pages, a fragment, a static file, and the error pages: 404, 400 and 403
    for url in ("/", "/topics", f"/topics/{topic}", f"/topics/{topic}/partitions",
                f"/topics/{topic}/delete", "/topics/new", "/browse", f"/browse/{topic}",
                "/groups", f"/groups/{group}", f"/groups/{group}/reset", "/static/console.css",
                "/no/such/page", f"/browse/{topic}?partition=x"):
        assert_not_frameable(client.get(url))
    assert_not_frameable(client.get("/topics", headers={"HX-Request": "true"}))
    assert_not_frameable(client.post(f"/topics/{topic}/alter/confirm",
                                     data={"config": "a=b"}, headers={"Origin": "null"}))
    assert_not_frameable(client.post(f"/topics/{topic}/alter/confirm", data={"config": "a=b"},
                                     headers=OWN))
    # And the 500 page, which Starlette sends from outside the app's middleware
    def broken(name):
        raise RuntimeError("a bug")

    monkeypatch.setattr(client.app.state.console.admin, "describe_group", broken)
    failed = client.get(f"/groups/{group}")
    assert failed.status_code == 500
    assert_not_frameable(failed)


def test_the_login_and_loopback_refusals_forbid_framing_too(tmp_path):
    from starlette.testclient import TestClient

    from plinth.client.console.app import create_app
    from plinth.client.console.auth import hash_token
    from plinth.client.console.config import ConsoleConfig
    from plinth.client.console.runner import LoopbackHostOnly

    auth = tmp_path / "console.auth"
    auth.write_text(f"token ci {hash_token('tok')}\n")
    # No broker needed: the 401 and the 421 are answered without one
    with TestClient(create_app(ConsoleConfig(broker="tcp://127.0.0.1:1",
                                             auth_file=auth))) as client:
        refused = client.get("/topics")
        assert refused.status_code == 401
        assert_not_frameable(refused)
    with TestClient(LoopbackHostOnly(create_app(ConsoleConfig(broker="tcp://127.0.0.1:1")))
                    ) as client:
        misnamed = client.get("/topics")   # the TestClient's Host is "testserver"
        assert misnamed.status_code == 421
        assert_not_frameable(misnamed)


def test_a_content_security_policy_a_response_has_keeps_its_directives():
    headers = add_frame_headers([(b"content-security-policy", b"default-src 'self';"),
                                 (b"x-frame-options", b"SAMEORIGIN")])
    assert headers == [(b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'"),
                       (b"x-frame-options", b"DENY")]


@pytest.mark.parametrize("text, origin", [
    ("http://127.0.0.1:7480", ("http", "127.0.0.1", 7480)),
    ("https://Console.Example/topics?x=1", ("https", "console.example", 443)),
    ("http://[::1]:7480/", ("http", "::1", 7480)),
    ("null", None),
    ("http://host:notaport", None),
    ("ftp://host", None),
])
def test_an_origin_is_its_scheme_host_and_port_with_the_default_port_made_explicit(text, origin):
    assert origin_of(text) == origin
