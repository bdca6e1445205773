"""The console's pages over HTTP against a real broker: each answers 200, bad input
gets a clear 4xx page and never a traceback, and changes need their confirmation."""

from __future__ import annotations

import re

import pytest

from plinth import limits
from tests.client.console.conftest import OWN_ORIGIN, console_client
from tests.support import free_port, unique_topic, wait_until


def form_token(page_html: str) -> str:
    return re.search(r'name="token" value="([0-9a-f.]+)"', page_html).group(1)


def delete_form(page_html: str, confirm_name: str) -> dict:
    """What a topic's delete page posts: its token, the topic id it showed, the name typed."""
    topic_id = re.search(r'name="topic_id" value="([0-9a-f]*)"', page_html).group(1)
    return {"token": form_token(page_html), "topic_id": topic_id, "confirm_name": confirm_name}


def assert_clear_error(response, status: int, *phrases: str) -> None:
    assert response.status_code == status, response.text[:500]
    assert "Traceback" not in response.text and 'File "' not in response.text
    for phrase in phrases:
        assert phrase in response.text, (phrase, response.text[:1000])


@pytest.fixture(scope="module")
def topic(admin):
    name = unique_topic("console")
    admin.create_topic(name, partitions=3, config={"retention.ms": "3600000"})
    return name


def test_every_page_answers_200_with_the_nav(console, topic):
    for url in ("/", "/topics", f"/topics?q={topic[:9]}", f"/topics/{topic}",
                f"/topics/{topic}/partitions", "/topics/new", f"/topics/{topic}/delete",
                "/static/htmx.min.js", "/static/console.css", "/static/console.js"):
        response = console.get(url)
        assert response.status_code == 200, (url, response.text[:500])
    page = console.get("/").text
    for link in ('href="/"', 'href="/topics"', 'href="/browse"', 'href="/groups"'):
        assert link in page


def test_the_overview_shows_the_brokers_shards_and_partition_health(console):
    page = console.get("/").text
    assert "2/2</span> shards" in page
    assert 'id="offline">0<' in page and 'id="under-replicated">0<' in page
    assert "<svg" in page


def test_htmx_gets_the_content_alone_and_a_browser_the_whole_page(console):
    assert "<nav" in console.get("/topics").text
    fragment = console.get("/topics", headers={"HX-Request": "true"}).text
    assert "<nav" not in fragment and 'id="topic-table"' in fragment


def test_the_topic_list_is_searched_by_prefix_and_paged(console, admin):
    prefix = unique_topic("page")
    names = sorted(f"{prefix}-{i}" for i in range(5))
    for name in names:
        admin.create_topic(name)
    first = console.get(f"/topics?q={prefix}&limit=2").text
    assert names[0] in first and names[1] in first and names[2] not in first
    assert f"after={names[1]}" in first
    second = console.get(f"/topics?q={prefix}&after={names[1]}&limit=2").text
    assert names[2] in second and names[3] in second and names[1] not in second
    last = console.get(f"/topics?q={prefix}&after={names[3]}&limit=2").text
    assert names[4] in last and 'rel="next"' not in last


def test_a_topic_page_shows_each_partition_and_the_config(console, topic):
    page = console.get(f"/topics/{topic}").text
    rows = re.findall(r'<tr><td class="num">(\d+)</td>', page)
    assert rows == ["0", "1", "2"]
    assert "retention.ms" in page and "3600000" in page


def test_the_partition_table_gives_records_per_second_once_it_has_two_looks(
        console, console_broker, topic):
    from plinth import Producer

    console.get(f"/topics/{topic}/partitions")
    with Producer(broker=console_broker.url, linger_ms=1) as producer:
        for i in range(50):
            producer.send(topic, b"v%d" % i, partition=0)
        producer.flush()

    def partition_0_rate():
        table = console.get(f"/topics/{topic}/partitions").text
        rate = re.search(r'<td class="num">([0-9.]+)</td></tr>', table)   # row 0 is first
        return rate is not None and float(rate.group(1)) > 0

    assert wait_until(partition_0_rate, timeout_s=10, interval_s=0.2)


@pytest.mark.parametrize("url, status, phrase", [
    ("/topics/no-such-topic-here", 404, "UnknownTopicError"),
    ("/topics/bad%20name!", 400, "InvalidTopicError"),
    ("/topics?limit=0", 400, "limit 0 is outside 1..200"),
    ("/topics?limit=abc", 400, "limit &#39;abc&#39; is not a whole number"),
    ("/topics?q=" + "x" * 300, 400, "search is 300 characters; at most 249"),
    ("/no/such/page", 404, "/no/such/page"),
])
def test_bad_input_gets_a_clear_error_page_and_no_traceback(console, url, status, phrase):
    assert_clear_error(console.get(url), status, phrase)


def test_a_topic_of_one_partition_is_said_in_the_singular(console, admin):
    # Given a topic of one partition / When its page is shown / Then "1 partition"
    topic = unique_topic("one")
    admin.create_topic(topic, partitions=1)
    page = console.get(f"/topics/{topic}").text
    assert "<p>1 partition, " in page or "<p>1 partition<" in page, page[:2000]
    assert "1 partitions" not in page


def test_the_browser_s_favicon_request_gets_no_content_rather_than_a_404(console):
    assert console.get("/favicon.ico").status_code == 204


@pytest.mark.parametrize("form, phrase", [
    ({"name": "bad name", "partitions": "1"}, "InvalidTopicError"),
    ({"name": "ok-name", "partitions": "0"}, "partitions 0 is outside 1..4096"),
    ({"name": "ok-name", "partitions": "many"}, "partitions &#39;many&#39; is not a whole number"),
    ({"name": "ok-name", "config": "no equals sign"}, "config line 1"),
    ({"name": "ok-name", "config": "a=b\n" * 20_000}, "at most 16384"),
])
def test_a_bad_create_form_is_refused_at_its_confirmation(console, form, phrase):
    assert_clear_error(console.post("/topics/new/confirm", data=form), 400, phrase)


def test_a_topic_is_created_altered_and_deleted_through_their_confirmations(console, admin):
    name = unique_topic("made")
    # Create: the confirmation shows what will be made; only its post creates
    confirm = console.post("/topics/new/confirm", data={"name": name, "partitions": "2",
                                                        "config": "retention.ms=60000"})
    assert confirm.status_code == 200 and f"Create topic {name}?" in confirm.text
    assert name not in admin.list_topics()
    made = console.post("/topics/new", data={"name": name, "partitions": "2",
                                             "config": "retention.ms=60000",
                                             "token": form_token(confirm.text)})
    assert made.status_code == 200 and made.url.path == f"/topics/{name}"
    assert admin.describe_topic(name).partitions == 2
    # Alter: the confirmation shows the old and new value
    confirm = console.post(f"/topics/{name}/alter/confirm", data={"config": "retention.ms=120000"})
    assert "60000" in confirm.text and "120000" in confirm.text
    assert admin.describe_topic(name).config["retention.ms"] == "60000"
    console.post(f"/topics/{name}/alter", data={"config": "retention.ms=120000",
                                                "token": form_token(confirm.text)})
    assert admin.describe_topic(name).config["retention.ms"] == "120000"
    # A "key=" line sets the key back to its default
    confirm = console.post(f"/topics/{name}/alter/confirm", data={"config": "retention.ms="})
    assert "120000" in confirm.text and "(default)" in confirm.text
    console.post(f"/topics/{name}/alter", data={"config": "retention.ms=",
                                                "token": form_token(confirm.text)})
    assert admin.describe_topic(name).config["retention.ms"] == "604800000"
    # Delete: needs the name typed
    confirm = console.get(f"/topics/{name}/delete")
    assert_clear_error(console.post(f"/topics/{name}/delete",
                                    data=delete_form(confirm.text, "x")),
                       400, f"type the topic&#39;s name ({name})")
    assert name in admin.list_topics()
    gone = console.post(f"/topics/{name}/delete", data=delete_form(confirm.text, name))
    assert gone.status_code == 200 and gone.url.path == "/topics"
    assert name not in admin.list_topics()


def test_a_change_without_the_confirmation_token_is_refused(console, admin, topic):
    for url, data in ((f"/topics/{topic}/delete", {"confirm_name": topic}),
                      (f"/topics/{topic}/delete", {"confirm_name": topic, "token": "0" * 64}),
                      ("/topics/new", {"name": unique_topic("forged")}),
                      (f"/topics/{topic}/alter", {"config": "retention.ms=1"})):
        assert_clear_error(console.post(url, data=data), 400, "confirmation token")
    assert topic in admin.list_topics()
    assert admin.describe_topic(topic).config["retention.ms"] == "3600000"


def test_the_live_stream_sends_the_summary_and_the_charts(console):
    with console.stream("GET", "/overview/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = []
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line[len("event: "):])
            if events.count("charts") >= 2:
                break
    assert events[:3] == ["summary", "tables", "charts"]


def test_an_idle_console_asks_the_broker_nothing_once_the_last_stream_closed(console):
    import time

    sampler = console.app.state.console.sampler
    with console.stream("GET", "/overview/stream") as stream:
        for line in stream.iter_lines():
            if line == "event: charts":
                break
    # Then the stream's end unsubscribed it, and no poll follows
    wait_until(lambda: sampler.subscribers == 0, timeout_s=10)
    polls = sampler.polls
    console.get("/")   # a page without its stream (no browser script) polls nothing either
    time.sleep(1.0)    # five sample intervals of 0.2 s: a measured quiet period
    assert sampler.polls == polls


def test_static_assets_are_served_compressed(console):
    response = console.get("/static/htmx.min.js", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert int(response.headers.get("content-length", 0)) < 25_000


def test_a_topic_pages_stream_sends_its_partition_table(console, topic):
    with console.stream("GET", f"/topics/{topic}/stream") as stream:
        lines = []
        for line in stream.iter_lines():
            lines.append(line)
            if line.startswith("data: </tbody></table>"):
                break
    assert lines[0] == "event: partitions"
    assert len([line for line in lines if line.startswith('data: <tr><td class="num">')]) == 3


def test_a_stream_for_a_bad_topic_name_is_a_clear_400(console):
    assert_clear_error(console.get("/topics/bad%20name/stream"), 400, "InvalidTopicError")


def status_of_stream(client, url: str) -> tuple[int, str]:
    """The status of ``url`` and its body, read only if it is not an event stream (one
    never ends)."""
    with client.stream("GET", url) as response:
        if response.headers["content-type"].startswith("text/event-stream"):
            return response.status_code, ""
        return response.status_code, response.read().decode()


def test_a_stream_for_an_unknown_topic_is_a_404_before_it_starts(console):
    status, page = status_of_stream(console, f"/topics/{unique_topic('nosuch')}/stream")
    assert status == 404 and "UnknownTopicError" in page, (status, page[:500])


@pytest.fixture(scope="module")
def console_of_no_broker():
    """A console whose broker does not answer: nothing listens at its address."""
    with console_client(f"tcp://127.0.0.1:{free_port()}", request_timeout_ms=300) as client:
        yield client


@pytest.mark.parametrize("url", [
    "/", "/topics", "/topics/t", "/topics/t/partitions", "/topics/t/stream", "/browse",
    "/browse/t", "/record/t/0/0", "/groups", "/groups/g", "/groups/g/stream",
    "/groups/g/reset"])
def test_every_page_asking_a_broker_that_does_not_answer_is_a_503(console_of_no_broker, url):
    status, page = status_of_stream(console_of_no_broker, url)
    assert status == 503, (status, page[:500])
    assert "PlinthTimeoutError" in page and "Traceback" not in page


def test_a_method_no_page_takes_is_a_405_naming_the_allowed_ones(console):
    # Given no Origin header: a method no page takes is not a change to refuse
    for origin in ({}, {"Origin": "http://elsewhere.example"}):
        response = console.request("DELETE", "/", headers=origin)
        assert response.status_code == 405, response.text[:500]
        assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD"}   # a set in Starlette
    # A POST where a page takes POSTs is still refused when it comes from elsewhere
    assert console.post("/topics/new", headers={"Origin": "http://elsewhere.example"}
                        ).status_code == 403


def confirmed(client, path: str, form: dict) -> dict:
    """``form`` with the token its confirmation page (a post to ``path``) gives it."""
    page = client.post(path, data=form)
    assert page.status_code == 200, page.text[:500]
    return {**form, "token": form_token(page.text)}


def test_a_create_confirmed_for_one_plan_does_not_create_another(console, admin):
    # Given a create of 2 partitions, confirmed
    name = unique_topic("bound")
    form = confirmed(console, "/topics/new/confirm", {"name": name, "partitions": "2",
                                                      "config": ""})
    # When its token is posted with another plan (the tester's report: 7 partitions
    # and retention.ms=1 were created), then each is refused, and nothing is created
    for changed in ({"partitions": "7", "config": "retention.ms=1"}, {"partitions": "7"},
                    {"config": "retention.ms=1"}, {"replication_factor": "1"}):
        assert_clear_error(console.post("/topics/new", data={**form, **changed}), 400,
                           "not the plan that was confirmed", "confirm again")
    assert name not in admin.list_topics()
    # And the plan confirmed is still made
    made = console.post("/topics/new", data=form)
    assert made.status_code == 200 and admin.describe_topic(name).partitions == 2


def test_an_alter_confirmed_for_one_config_does_not_apply_another(console, admin, topic):
    # Given an alter of retention.ms to 120000, confirmed
    name = unique_topic("bound-alter")
    admin.create_topic(name, 1, config={"retention.ms": "60000"})
    form = confirmed(console, f"/topics/{name}/alter/confirm", {"config": "retention.ms=120000"})
    # When its token is posted with another config, or to another topic
    for config in ("retention.ms=1", "retention.ms=120000\nsegment.ms=1", "retention.ms="):
        assert_clear_error(console.post(f"/topics/{name}/alter", data={**form, "config": config}),
                           400, "not the plan that was confirmed")
    assert_clear_error(console.post(f"/topics/{topic}/alter", data=form), 400,
                       "not the plan that was confirmed")
    # Then nothing changed
    assert admin.describe_topic(name).config["retention.ms"] == "60000"
    assert admin.describe_topic(topic).config["retention.ms"] == "3600000"


def test_a_delete_confirmed_before_the_topic_was_deleted_and_created_again_deletes_nothing(
        console, admin):
    # Given a topic's delete page, shown
    name = unique_topic("recreated")
    admin.create_topic(name, 1)
    page = console.get(f"/topics/{name}/delete")
    old_id = admin.describe_topic(name).topic_id
    assert page.status_code == 200 and old_id in page.text
    form = delete_form(page.text, name)
    # When the topic is deleted and created again by another client, and then the
    # delete is posted
    admin.delete_topic(name)
    admin.create_topic(name, 2)
    new_id = admin.describe_topic(name).topic_id
    refused = console.post(f"/topics/{name}/delete", data=form)
    # Then it is refused, saying the topic was re-created and to show the page again
    assert_clear_error(refused, 400, f"topic &#39;{name}&#39; was re-created since this "
                       f"confirmation was shown, so it was not deleted",
                       f"not {old_id}", "show its delete page again")
    # And the new topic is still there
    assert admin.describe_topic(name).topic_id == new_id
    assert admin.describe_topic(name).partitions == 2
    # And the token does not stretch to the new topic's id either
    assert_clear_error(console.post(f"/topics/{name}/delete",
                                    data={**form, "topic_id": new_id}),
                       400, "not the plan that was confirmed")
    assert name in admin.list_topics()
    # And the delete page shown again deletes the new topic
    again = console.get(f"/topics/{name}/delete")
    gone = console.post(f"/topics/{name}/delete", data=delete_form(again.text, name))
    assert gone.status_code == 200 and gone.url.path == "/topics"
    assert name not in admin.list_topics()


def test_a_confirmation_older_than_its_lifetime_is_refused(console, admin, monkeypatch):
    # Given an alter confirmed at NOW, and a delete confirmed too
    name = unique_topic("expired")
    admin.create_topic(name, 1, config={"retention.ms": "60000"})
    tokens = console.app.state.console.confirmations
    now_s = tokens.clock()
    monkeypatch.setattr(tokens, "clock", lambda: now_s)
    form = confirmed(console, f"/topics/{name}/alter/confirm", {"config": "retention.ms=120000"})
    delete = delete_form(console.get(f"/topics/{name}/delete").text, name)
    # When they are posted a second after their lifetime
    monkeypatch.setattr(tokens, "clock", lambda: now_s + limits.CONSOLE_CONFIRM_TOKEN_S + 1)
    # Then they are refused, saying so, and nothing changed
    assert_clear_error(console.post(f"/topics/{name}/alter", data=form), 400, "expired",
                       "confirm again")
    assert_clear_error(console.post(f"/topics/{name}/delete", data=delete), 400, "expired")
    assert admin.describe_topic(name).config["retention.ms"] == "60000"


def test_a_confirmation_made_for_one_user_does_not_apply_for_another(console_broker, admin,
                                                                    tmp_path):
    from starlette.testclient import TestClient

    from plinth.client.console.app import create_app
    from plinth.client.console.auth import hash_password
    from plinth.client.console.config import ConsoleConfig

    # Given a console with a login, and an alter that alice confirmed
    auth = tmp_path / "console.auth"
    cheap = {"n": 2 ** 10, "r": 8, "p": 1}
    auth.write_text(f"user alice {hash_password('a', **cheap)}\n"
                    f"user bob {hash_password('b', **cheap)}\n")
    name = unique_topic("users")
    admin.create_topic(name, 1, config={"retention.ms": "60000"})
    app = create_app(ConsoleConfig(broker=console_broker.url, auth_file=auth))
    with TestClient(app, headers={"Origin": OWN_ORIGIN}) as client:
        alice, bob = (("alice", "a"), ("bob", "b"))
        form = {"config": "retention.ms=120000"}
        page = client.post(f"/topics/{name}/alter/confirm", data=form, auth=alice)
        assert page.status_code == 200, page.text
        form["token"] = form_token(page.text)
        # When bob posts it, it is refused and nothing changes
        assert_clear_error(client.post(f"/topics/{name}/alter", data=form, auth=bob), 400,
                           "not the plan that was confirmed")
        assert admin.describe_topic(name).config["retention.ms"] == "60000"
        # When alice does, it applies
        assert client.post(f"/topics/{name}/alter", data=form, auth=alice).status_code == 200
    assert admin.describe_topic(name).config["retention.ms"] == "120000"


def test_a_tiered_partitions_remote_offsets_are_shown_with_both_ends_held():
    # Given a partition whose offsets 0 to 39080 are in object storage and whose local
    # log starts at 39081 (the remote end offset is the next one, as a log end is)
    from plinth import protocol
    from plinth.client.console.context import make_templates

    part = protocol.PartitionInfo(0, shard="s0", start_offset=0, end_offset=40_000,
                                  local_start_offset=39_081, remote_start_offset=0,
                                  remote_end_offset=39_081)
    html = make_templates().env.get_template("topics/partitions.html").render(
        rows=[(part, None)], tiered=True)
    # Then the range shown is "0 to 39080", not "0–39081", which reads as holding 39081
    assert "0 to 39080" in html
    assert "39081" not in html
    assert "end (next)" in html


def test_a_remote_log_not_listed_yet_is_shown_unknown_with_why_not_as_nothing_remote():
    # Given a tiered partition whose new leader has not listed the store (it is down)
    from plinth import protocol
    from plinth.client.console.context import make_templates

    why = "shard-2 has not listed object storage since it began uploading rt-0: ..."
    part = protocol.PartitionInfo(0, shard="shard-2", start_offset=0, end_offset=16_927,
                                  size_bytes=9_084_474, remote_not_listed=why)
    html = make_templates().env.get_template("topics/partitions.html").render(
        rows=[(part, None)], tiered=True)
    # Then its remote bytes and offsets are "?", the reason in their titles, not "—"
    assert "? (not listed yet)" in html and f'title="{why}"' in html
    assert html.count("—") == 1   # the rate's alone (none sampled), not the remote offsets'


def test_remote_bytes_of_partitions_not_listed_yet_are_marked_in_the_topic_list_and_overview():
    # Given a tiered topic one of whose two partitions' remote logs is not listed yet,
    # and a shard status saying so
    from plinth import protocol
    from plinth.client.console.context import make_templates
    from plinth.client.console.topic_listing import topic_page

    why = "shard-2 has not listed object storage since it began uploading rt-0: ..."
    parts = [protocol.PartitionInfo(0, shard="shard-2", remote_bytes=0, remote_not_listed=why),
             protocol.PartitionInfo(1, shard="shard-1", remote_bytes=4096)]

    class Admin:
        def list_topics(self):
            return ["rt"]

        def describe_topic(self, name):
            return protocol.TopicInfo(name, 2, partition_info=parts)

    page = topic_page(Admin())
    templates = make_templates().env
    listed = templates.get_template("topics/list.html").render(page=page, fragment=True)
    shard = protocol.ShardStatus("shard-2", "tcp://127.0.0.1:7502", True, 1, 10, 0.0, 0.0,
                                 remote_partitions_not_listed=1)
    overview = templates.get_template("overview_tables.html").render(
        status=protocol.StatusInfo([], [shard], []))
    # Then both mark the remote figure "?", saying how many partitions are not listed
    assert page.rows[0].remote_not_listed == 1
    for html in (listed, overview):
        assert "remote logs of 1 partitions not listed yet" in html, html
        assert " ?</span>" in html


@pytest.mark.parametrize("form, phrase", [
    ({"name": "__consumer_offsets", "partitions": "1"}, "internal"),
    ({"name": "ok-review", "config": "segment.bytes=1"}, "segment.bytes"),
    ({"name": "ok-review", "config": "foo.bar=1"}, "unknown config foo.bar"),
    ({"name": "ok-review", "config": "cleanup.policy=compact"}, "cleanup.policy"),
])
def test_a_create_the_broker_would_refuse_is_refused_on_its_review_page(console, admin, form,
                                                                        phrase):
    page = console.post("/topics/new/confirm", data=form)
    assert_clear_error(page, 400, phrase)
    assert "ok-review" not in admin.list_topics()


def test_an_alter_the_broker_would_refuse_is_refused_on_its_review_page(console, admin, topic):
    page = console.post(f"/topics/{topic}/alter/confirm", data={"config": "retention.ms=abc"})
    assert_clear_error(page, 400, "retention.ms")
    assert 'name="token"' not in page.text
