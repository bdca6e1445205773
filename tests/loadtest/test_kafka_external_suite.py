"""loadtest/kafka_external_suite.py: a fast subset of kafka-python's own integration
tests (fetched from PyPI as the installed version's sdist, run unmodified) against a
fresh broker with a Kafka listener; and how the script reads pytest's JUnit report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loadtest import kafka_external_suite as suite

REPO = Path(__file__).resolve().parents[2]
# Tests of the suite that pass on Plinth, one per area: topics, fetch sizes,
# pause/resume, committed offsets in a group.
FAST_SUBSET = ["test_create_delete_topics", "test_kafka_consumer_max_bytes_one_msg",
               "test_paused", "test_kafka_consumer__offset_commit_resume"]


def test_a_fast_subset_of_kafka_pythons_integration_tests_passes_against_a_fresh_broker(
        ray_cluster, tmp_path):
    # Given the suite's subset, run by the script against its own fresh broker
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.kafka_external_suite", "--json",
         "--plinth", str(Path(sys.executable).parent / "plinth"), "--ray-address", ray_cluster,
         "--work-dir", str(tmp_path), "-k", " or ".join(FAST_SUBSET)],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    # Then every selected test ran and passed
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert sorted(t["name"].split("::")[1] for t in report["tests"]) == sorted(FAST_SUBSET)
    assert report["counts"]["passed"] == len(FAST_SUBSET), report


def test_the_report_gives_each_outcome_its_class_and_the_pass_rate_leaves_out_skips(tmp_path):
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite>'
        '<testcase classname="test.integration.test_a" name="test_ok"/>'
        '<testcase classname="test.integration.test_a" name="test_new[x]">'
        '<failure message="boom">trace\nmore</failure></testcase>'
        '<testcase classname="test.integration.test_b" name="test_known">'
        '<error message="kaput"/></testcase>'
        '<testcase classname="test.integration.test_b" name="test_skip">'
        '<skipped message="no"/></testcase>'
        '<testcase classname="test.integration.test_ssl_integration.TestSSL" name="test_x">'
        '<error message="no TLS"/></testcase>'
        '</testsuite></testsuites>')
    suite.KNOWN_FAILURES["test_known"] = ("unsupported", "not in Plinth")
    try:
        rows = suite.results(report)
    finally:
        del suite.KNOWN_FAILURES["test_known"]
    tls = "unsupported: " + suite.KNOWN_FAILURES["test_ssl_integration"][1]
    assert [(r["name"], r["outcome"], r["class"], r["message"]) for r in rows] == [
        ("test_a::test_ok", "passed", "", ""),
        ("test_a::test_new[x]", "failed", "UNCLASSIFIED", "boom"),
        ("test_b::test_known", "error", "unsupported: not in Plinth", "kaput"),
        ("test_b::test_skip", "skipped", "", "no"),
        ("test_ssl_integration::TestSSL::test_x", "error", tls, "no TLS")]
    assert suite.summary(rows) == {"passed": 1, "failed": 1, "error": 2, "skipped": 1,
                                   "pass_rate": 0.25, "unclassified": 1}
