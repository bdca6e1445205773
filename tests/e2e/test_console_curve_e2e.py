"""The console against a CurveZMQ broker with its own key: it sees what its key's
ACL grants, and shows what that key may not do as not permitted."""

from __future__ import annotations

import pytest

from plinth import Admin
from tests.e2e.test_security_e2e import secure_options
from tests.support import unique_topic


@pytest.fixture
def curve_broker(tmp_path, broker_factory):
    serve_args, options = secure_options(tmp_path, ["operator", "viewer"], lambda keys: {
        keys["operator"]: [{"operations": ["produce", "consume", "admin"], "topics": "*"},
                           {"operations": ["cluster"]}],
        keys["viewer"]: [{"operations": ["consume"], "topics": "*"}, {"operations": ["cluster"]}]})
    broker = broker_factory(shards=1, extra_args=serve_args)
    return broker, options


def console_as(broker, key_options):
    from starlette.testclient import TestClient

    from plinth.client.console.app import create_app
    from plinth.client.console.config import ConsoleConfig

    # Origin: its posts come from the console's own pages, as a browser's do
    return TestClient(create_app(ConsoleConfig(broker=broker.url, request_timeout_ms=10_000,
                                               **key_options)), raise_server_exceptions=False,
                      headers={"Origin": "http://testserver"})


def test_a_console_key_without_admin_rights_shows_admin_actions_as_not_permitted(curve_broker):
    broker, options = curve_broker
    topic = unique_topic("guarded")
    with Admin(broker=broker.url, **options["operator"]) as admin:
        admin.create_topic(topic, 2)
    with console_as(broker, options["viewer"]) as viewer:
        # The pages load, with the admin actions shown as not permitted
        assert "Create topic: not permitted" in viewer.get("/topics").text
        detail = viewer.get(f"/topics/{topic}")
        assert detail.status_code == 200 and "Delete topic" not in detail.text
        assert "not permitted" in detail.text
        assert viewer.get("/").status_code == 200
        # And an admin action tried anyway (even with a valid confirmation) is refused
        # by the broker: 403, not permitted
        confirm = viewer.get(f"/topics/{topic}/delete")
        assert confirm.status_code == 403 and "not permitted" in confirm.text, confirm.text[:300]
        # (a plan of no topic id: the viewer may not describe the topic to learn it)
        from plinth.client.console.pages_topics import delete_plan

        token = viewer.app.state.console.confirmations.make("delete-topic", topic,
                                                             delete_plan(""))
        refused = viewer.post(f"/topics/{topic}/delete", data={"token": token,
                                                               "confirm_name": topic})
        assert refused.status_code == 403 and "not permitted" in refused.text
    with Admin(broker=broker.url, **options["operator"]) as admin:
        assert topic in admin.list_topics()
    with console_as(broker, options["operator"]) as operator:
        page = operator.get(f"/topics/{topic}").text
        assert "Delete topic" in page and "not permitted" not in page
