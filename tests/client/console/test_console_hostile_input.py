"""Whatever a browser (or anything else) sends the console, it answers with a page:
never a 500, never a stack trace, and it keeps serving. Random paths, query strings
and forms against every page, over a real broker (hypothesis, as
tests/faults/test_hostile_input.py does for the broker's sockets)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from plinth.client.admin import Admin
from plinth.client.producer import Producer
from tests.client.console.conftest import console_client
from tests.support import unique_topic

# Text a form or a query string can carry: any code point, separators included
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
FIELDS = ("partition", "start", "offset", "time", "key", "value", "limit", "scan", "view",
          "positions", "q", "after", "prefix", "to", "topic", "timestamp", "config", "name",
          "partitions", "replication_factor", "token", "confirm_name", "dry_run")
PARAMS = st.dictionaries(st.sampled_from(FIELDS) | TEXT.filter(bool), TEXT, max_size=6)
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def client(shared_broker):
    with console_client(shared_broker.url) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def topic(shared_broker):
    name = unique_topic("hostile")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(name, 2)
    with Producer(broker=shared_broker.url) as producer:
        for n in range(20):
            producer.send(name, b"\xff\x00 binary %d" % n if n % 2 else b'{"n": %d}' % n,
                          key=b"k-%d" % n, headers=[("h", b"\x80")])
        producer.flush()
    return name


def answered_as_a_page(response) -> None:
    assert response.status_code < 500 or response.status_code == 503, \
        (response.status_code, response.text[:400])
    assert "Traceback" not in response.text


@SETTINGS
@given(params=PARAMS)
def test_any_query_string_on_any_page_is_answered_without_a_server_error(client, topic, params):
    for path in ("/", "/topics", f"/topics/{topic}", "/browse", f"/browse/{topic}",
                 f"/record/{topic}/0/3", "/groups", "/groups/no-such-group",
                 "/groups/no-such-group/reset", "/groups/no-such-group/delete",
                 f"/topics/{topic}/partitions", f"/topics/{topic}/delete", "/topics/new"):
        answered_as_a_page(client.get(path, params=params))


@SETTINGS
@given(segments=st.lists(TEXT.filter(bool), min_size=1, max_size=4))
def test_any_path_is_answered_without_a_server_error(client, segments):
    for root in ("/topics/", "/browse/", "/record/", "/groups/", "/"):
        answered_as_a_page(client.get(root + "/".join(quote(s, safe="") for s in segments)))


@SETTINGS
@given(form=PARAMS)
def test_any_form_posted_to_any_action_is_answered_and_changes_nothing(client, topic, form):
    for path in ("/topics/new/confirm", "/topics/new", f"/topics/{topic}/alter/confirm",
                 f"/topics/{topic}/alter", f"/topics/{topic}/delete",
                 "/groups/no-such-group/reset", "/groups/no-such-group/delete"):
        answered_as_a_page(client.post(path, data=form))
    # Without the confirmation token no change is made: the topic is still there
    assert client.get(f"/topics/{topic}").status_code == 200
