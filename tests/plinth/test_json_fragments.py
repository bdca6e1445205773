"""plinth/json_fragments.py: the bytes of json.dumps, with only changed members encoded."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plinth import json_fragments
from plinth.json_fragments import JsonFragments


def dumps(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def document(topics: dict) -> dict:
    return {"version": 1, "shards": ["shard-0", "shard-1"], "topics": topics,
            "controller_epoch": 4}


@pytest.fixture
def encodings(monkeypatch) -> list:
    """Every value json_fragments encodes itself, in order."""
    seen = []

    def counting(value):
        seen.append(value)
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    monkeypatch.setattr(json_fragments, "_dumps", counting)
    return seen


def test_the_bytes_are_those_of_json_dumps_with_sorted_keys_and_no_spaces():
    topics = {"zeta": {"partitions": 3, "config": {"b": "2", "a": "1"}, "sealed": False},
              "Ärger/\"quoted\"": {"partitions": 1, "ratio": 0.5, "producers": None},
              "alpha": {"placement": ["shard-1", "shard-0"], "ranges": {"1": [[0, "shard-0"]]}}}
    assert JsonFragments("topics").encode(document(topics)) == dumps(document(topics))


def hundred_encoded() -> tuple[JsonFragments, dict]:
    """Fragments that encoded a document of a hundred members, and those members."""
    fragments = JsonFragments("topics")
    topics = {f"t{i}": {"partitions": i + 1} for i in range(100)}
    fragments.encode(document(topics))
    return fragments, topics


def test_an_unchanged_member_is_not_encoded_again(encodings):
    fragments, topics = hundred_encoded()
    encodings.clear()
    topics["new"] = {"partitions": 7}
    topics["t5"] = {"partitions": 60}
    assert fragments.encode(document(topics)) == dumps(document(topics))
    assert {"partitions": 7} in encodings and {"partitions": 60} in encodings
    assert {"partitions": 1} not in encodings   # t0, unchanged


def test_the_members_encoded_again_are_the_new_and_the_changed_ones():
    # Given fragments that encoded three members
    fragments = JsonFragments("topics")
    topics = {"a": {"partitions": 1}, "b": {"partitions": 2}, "c": {"partitions": 3}}
    fragments.encode(document(topics))
    assert fragments.encoded_again["topics"] == {"a", "b", "c"}
    # When one changes, one is removed and one is added
    topics["b"]["partitions"] = 20
    del topics["c"]
    topics["d"] = {"partitions": 4}
    fragments.encode(document(topics))
    # Then the next encoding names the changed and the new one only
    assert fragments.encoded_again["topics"] == {"b", "d"}
    # And one without changes names none
    fragments.encode(document(topics))
    assert fragments.encoded_again["topics"] == set()


def test_a_member_changed_in_place_after_it_was_encoded_is_encoded_again():
    fragments = JsonFragments("topics")
    topics = {"orders": {"partitions": 1, "config": {"retention.ms": "1000"}}}
    fragments.encode(document(topics))
    topics["orders"]["config"]["retention.ms"] = "2000"
    encoded = fragments.encode(document(topics))
    assert b'"retention.ms":"2000"' in encoded and encoded == dumps(document(topics))


def test_a_removed_member_is_gone_from_the_next_encoding():
    fragments = JsonFragments("topics")
    topics = {"a": {"partitions": 1}, "b": {"partitions": 2}}
    fragments.encode(document(topics))
    del topics["a"]
    assert fragments.encode(document(topics)) == dumps(document(topics))


def test_a_member_name_that_is_not_a_string_is_a_programmer_error():
    with pytest.raises(AssertionError, match="member name 3 is not a string"):
        JsonFragments("topics").encode(document({3: {}}))


def test_members_that_are_not_a_dict_are_a_programmer_error():
    with pytest.raises(AssertionError, match="'topics' holds a list"):
        JsonFragments("topics").encode({"topics": []})


# No booleans beside the integers: a member's value keeps its type (the module's
# contract; True == 1, and the two encode differently).
json_values = st.recursive(
    st.none() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                  max_size=3),
    max_leaves=8)
members = st.dictionaries(st.text(max_size=4), json_values, max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(members, min_size=1, max_size=5))
def test_any_sequence_of_documents_encodes_as_json_dumps_would(versions):
    fragments = JsonFragments("topics")
    for topics in versions:
        assert fragments.encode(document(topics)) == dumps(document(topics))


def test_several_maps_of_members_are_each_kept_apart(encodings):
    fragments = JsonFragments("partitions", "partition_counts")
    value = {"version": 1, "partitions": {"orders/0": {"sealed": False}},
             "partition_counts": {"orders": 1}}
    fragments.encode(value)
    encodings.clear()
    value["partition_counts"]["orders"] = 2
    assert fragments.encode(value) == dumps(value)
    assert 2 in encodings and {"sealed": False} not in encodings


def test_fragments_without_a_map_of_members_are_a_programmer_error():
    with pytest.raises(AssertionError, match="needs the keys"):
        JsonFragments()


# --- Tracked changes: the writer names what it changed ------------------------------

def test_the_test_suite_checks_every_tracked_encoding():
    # tests/conftest.py sets PLINTH_CHECK_TRACKED_CHANGES=1 before plinth is imported
    assert json_fragments.CHECK_TRACKED_CHANGES is True


def test_ray_workers_check_every_tracked_encoding_as_the_test_process_does(ray_cluster):
    # The shards and the controller run in Ray workers, which inherit the variable
    import ray

    @ray.remote
    def checking() -> bool:
        from plinth import json_fragments as in_worker
        return in_worker.CHECK_TRACKED_CHANGES

    assert ray.get(checking.remote(), timeout=120) is True


def test_a_tracked_encoding_reads_only_the_named_members_and_is_json_dumps(encodings):
    # Given fragments that encoded a hundred members
    fragments, topics = hundred_encoded()
    encodings.clear()
    # When one is added, one changed and one removed, and the writer names those three
    topics["new"] = {"partitions": 700}
    topics["t5"] = {"partitions": 600}
    del topics["t7"]
    given = {name: topics[name] for name in ("new", "t5")}
    encoded = fragments.encode_tracked(document(given), {"topics": ["new", "t5", "t7"]},
                                       lambda: document(topics))
    # Then the bytes are the whole document's, and only the named members were encoded
    assert encoded == dumps(document(topics))
    assert fragments.encoded_again["topics"] == {"new", "t5"}
    members_encoded = [v for v in encodings if isinstance(v, dict) and "partitions" in v]
    assert sorted(m["partitions"] for m in members_encoded) == [600, 700]


def test_a_change_the_writer_did_not_name_fails_the_check_by_member_name():
    # Given fragments that encoded two members
    fragments = JsonFragments("topics")
    topics = {"a": {"partitions": 1}, "b": {"partitions": 2}}
    fragments.encode(document(topics))
    # When "b" changes but the writer names only "a"
    topics["b"] = {"partitions": 20}
    # Then the check refuses the stale text and names the member it missed
    with pytest.raises(AssertionError, match=r"missed changes, first \['topics/b'\]"):
        fragments.encode_tracked(document({"a": topics["a"]}), {"topics": ["a"]},
                                 lambda: document(topics))


def test_a_tracked_encoding_before_a_whole_one_is_a_programmer_error():
    # No text is kept yet for the members it would not read
    with pytest.raises(AssertionError, match="before the whole document was encoded once"):
        JsonFragments("topics").encode_tracked(document({"a": {}}), {"topics": ["a"]},
                                               lambda: document({"a": {}}))


def test_a_member_given_but_not_named_is_a_programmer_error():
    fragments = JsonFragments("topics")
    fragments.encode(document({}))
    with pytest.raises(AssertionError, match=r"'topics' members \['b'\] were given but not named"):
        fragments.encode_tracked(document({"a": {}, "b": {}}), {"topics": ["a"]},
                                 lambda: document({"a": {}, "b": {}}))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(members, st.booleans()), min_size=1, max_size=6))
def test_any_sequence_of_tracked_and_whole_encodings_encodes_as_json_dumps_would(versions):
    # After a whole encoding of nothing, each version is encoded whole or tracked; a
    # tracked one names what differs from the version before it: added, changed, removed
    fragments = JsonFragments("topics")
    before: dict = {}
    fragments.encode(document(before))
    for topics, tracked in versions:
        if tracked:
            named = [n for n in set(before) | set(topics)
                     if before.get(n, ...) != topics.get(n, ...)]
            given = {n: topics[n] for n in named if n in topics}
            encoded = fragments.encode_tracked(document(given), {"topics": named},
                                               lambda: document(topics))
        else:
            encoded = fragments.encode(document(topics))
        assert encoded == dumps(document(topics))
        before = topics
