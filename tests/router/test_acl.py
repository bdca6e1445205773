"""acl.py: grants per client key, operation and topic pattern."""

import json

import pytest

from plinth.router.acl import Acl
from plinth.errors import InvalidConfigError, NotAuthorizedError

KEY = "A" * 40


def acl_from(tmp_path, grants) -> Acl:
    path = tmp_path / "acl.json"
    path.write_text(json.dumps(grants))
    return Acl.load(path)


def test_a_grant_allows_its_operations_on_matching_topics_only(tmp_path):
    acl = acl_from(tmp_path, {KEY: [{"operations": ["produce"], "topics": "orders.*"}]})
    acl.check(KEY, "produce", ["orders.eu"])
    with pytest.raises(NotAuthorizedError, match="may not produce topic 'payments'"):
        acl.check(KEY, "produce", ["payments"])
    with pytest.raises(NotAuthorizedError, match="may not consume topic 'orders.eu'"):
        acl.check(KEY, "fetch", ["orders.eu"])
    with pytest.raises(NotAuthorizedError, match="may not admin"):
        acl.check(KEY, "createTopic", ["orders.new"])


def test_metadata_needs_any_grant_and_unknown_keys_get_nothing(tmp_path):
    acl = acl_from(tmp_path, {KEY: [{"operations": ["consume"], "topics": "*"}]})
    acl.check(KEY, "listTopics", [])
    with pytest.raises(NotAuthorizedError, match="has no grants"):
        acl.check("B" * 40, "listTopics", [])


def test_the_star_key_applies_to_every_client(tmp_path):
    acl = acl_from(tmp_path, {"*": [{"operations": ["consume"], "topics": "public.*"}]})
    acl.check("C" * 40, "fetch", ["public.news"])


def test_a_bad_acl_file_names_the_problem(tmp_path):
    with pytest.raises(InvalidConfigError, match="unknown operations"):
        acl_from(tmp_path, {KEY: [{"operations": ["delete-everything"], "topics": "*"}]})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidConfigError, match="cannot read ACL file"):
        Acl.load(tmp_path / "bad.json")
