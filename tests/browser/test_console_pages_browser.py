"""The message browser and the consumer-group pages in a real browser (headless
Chromium) against a real broker and a real ``plinth console``: browse to a produced
record through the form and its permalink, filter by value, bad input shown as a
clear page, an offset reset through the dry run and the apply (checked with
``plinth group describe``) and refused while a member is active, and the lag chart
moving while records are produced. Each page's screenshot is saved as an artifact."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from plinth import limits
from tests.support import unique_topic, wait_until

NEEDLE_OFFSET = 17
RECORDS = 30


@pytest.fixture(scope="module")
def admin(browser_broker):
    from plinth import Admin

    with Admin(broker=browser_broker.url, request_timeout_ms=10_000) as module_admin:
        yield module_admin


@pytest.fixture(scope="module")
def records_topic(browser_broker, admin):
    """One partition of RECORDS records; NEEDLE_OFFSET has key "order-17", a JSON
    value naming "needle" and headers source=web, trace=abc."""
    from plinth import Producer

    name = unique_topic("browsed")
    admin.create_topic(name, 1)
    with Producer(broker=browser_broker.url, linger_ms=1) as producer:
        for n in range(RECORDS):
            if n == NEEDLE_OFFSET:
                producer.send(name, b'{"item":"needle","qty":3}', key=b"order-17",
                              headers=[("source", b"web"), ("trace", b"abc")])
            else:
                producer.send(name, b"plain %d" % n, key=b"order-%d" % n)
        producer.flush()
    return name


def by_id(browser, element_id: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id)


def heading(browser) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.TAG_NAME, "h1").text


def choose(browser, name: str, value: str) -> None:
    """Pick ``value`` in the form's <select name=``name``>."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.NAME, name)).select_by_value(value)


def type_into(browser, name: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    field = browser.find_element(By.NAME, name)
    field.clear()
    field.send_keys(text)


def listed_records(browser) -> list[tuple[int, int]]:
    from selenium.webdriver.common.by import By

    return [(int(row.get_attribute("data-partition")), int(row.get_attribute("data-offset")))
            for row in browser.find_elements(By.CSS_SELECTOR, "#records tr.record")]


def submit_and_wait(browser, button_id: str) -> None:
    """Click a submit button and wait for the next page to have loaded.

    The old page is marked with a window property that the next document does not have.
    Waiting for an element of the old page to go stale raced with Chrome: while the
    navigation detaches it, Chrome may answer "Node with given id does not belong to the
    document" instead of a stale-element error. Script calls that land mid-navigation fail
    with a WebDriverException too, and are polled again within the wait's bound."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_script("window.plinthOldPage = true;")
    by_id(browser, button_id).click()
    WebDriverWait(browser, 30, ignored_exceptions=(WebDriverException,)).until(
        lambda driver: driver.execute_script(
            "return window.plinthOldPage === undefined && document.readyState === 'complete';"))


def plinth_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plinth.cli", "--broker", url, *args],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))


def described_offsets(url: str, group: str, topic: str) -> dict[int, int]:
    """{partition: committed offset} of ``group`` on ``topic`` as `plinth group describe`
    prints them (rows: topic, partition, committed, end, lag, ...)."""
    described = plinth_cli(url, "group", "describe", group)
    assert described.returncode == 0, described.stderr
    return {int(line.split()[1]): int(line.split()[2]) for line in described.stdout.splitlines()
            if line.startswith(topic + " ")}


def test_a_produced_record_is_browsed_to_and_its_page_shows_key_value_and_headers(
        browser, console_url, records_topic, screenshot):
    # Given the topic's browse page, filled in to start at the record's offset
    browser.get(f"{console_url}/browse/{records_topic}")
    choose(browser, "partition", "0")
    choose(browser, "start", "offset")
    type_into(browser, "offset", str(NEEDLE_OFFSET))
    type_into(browser, "limit", "1")
    submit_and_wait(browser, "browse-go")
    # Then the one row listed is that record
    assert listed_records(browser) == [(0, NEEDLE_OFFSET)], browser.page_source[:2000]
    assert by_id(browser, "found").text == "1"
    screenshot("console-browse-offset")
    # When its permalink is followed
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, "#records tr.record a.permalink").click()
    wait_until(lambda: browser.find_elements(By.ID, "record-offset"), timeout_s=30)
    # Then the record page shows the key, value and headers the test produced
    assert by_id(browser, "record-offset").text == str(NEEDLE_OFFSET)
    assert by_id(browser, "record-key").text == "order-17"
    assert by_id(browser, "record-value").text == '{"item":"needle","qty":3}'
    headers = [h.text for h in by_id(browser, "record-headers").find_elements(
        By.CSS_SELECTOR, "div.header")]
    assert headers == ["source: web", "trace: abc"]
    screenshot("console-record")


def test_a_value_filter_lists_only_the_matching_record_and_the_scanned_count(
        browser, console_url, records_topic, screenshot):
    browser.get(f"{console_url}/browse/{records_topic}")
    choose(browser, "start", "oldest")
    type_into(browser, "value", "needle")
    submit_and_wait(browser, "browse-go")
    assert listed_records(browser) == [(0, NEEDLE_OFFSET)]
    assert by_id(browser, "scanned").text == str(RECORDS)
    assert by_id(browser, "found").text == "1"
    assert "matching" in by_id(browser, "scan-summary").text
    screenshot("console-browse-filtered")


@pytest.mark.parametrize("name,params,title,message", [
    ("offset", {"start": "offset", "offset": "abc"}, "Bad request",
     "offset 'abc' is not a whole number"),
    ("timestamp", {"start": "timestamp", "timestamp": "noon"}, "Bad request",
     "timestamp 'noon' is neither ms since the epoch nor an ISO 8601 time"),
    ("filter", {"value": "v" * (limits.CONSOLE_FILTER_BYTES_MAX + 1)}, "Bad request",
     f"the value filter is {limits.CONSOLE_FILTER_BYTES_MAX + 1} bytes; at most "
     f"{limits.CONSOLE_FILTER_BYTES_MAX} bytes are allowed"),
    ("topic", None, "Not found", "UnknownTopicError"),
])
def test_bad_input_shows_a_clear_message_on_the_page_and_no_traceback(
        browser, console_url, records_topic, screenshot, name, params, title, message):
    from urllib.parse import urlencode

    if params is None:
        url = f"{console_url}/browse/{unique_topic('missing')}"
    else:
        url = f"{console_url}/browse/{records_topic}?{urlencode(params)}"
    browser.get(url)
    assert heading(browser) == title, browser.page_source[:2000]
    from selenium.webdriver.common.by import By

    assert message in browser.find_element(By.CSS_SELECTOR, "section.error .message").text
    assert "Traceback" not in browser.page_source and 'File "' not in browser.page_source
    screenshot(f"console-browse-bad-{name}")


def test_an_invalid_offset_typed_into_the_form_gets_the_same_clear_page(
        browser, console_url, records_topic):
    browser.get(f"{console_url}/browse/{records_topic}")
    choose(browser, "start", "offset")
    type_into(browser, "offset", "-3")
    submit_and_wait(browser, "browse-go")
    assert heading(browser) == "Bad request"
    assert "offset -3 is out of range" in browser.page_source
    assert "Traceback" not in browser.page_source


def idle_group(admin, topic: str, committed: dict[int, int]) -> str:
    """A group with no members and these committed offsets on ``topic``."""
    group = unique_topic("clicks")
    admin.reset_group_offsets(group, {(topic, p): o for p, o in committed.items()})
    return group


def dry_run_in_browser(browser, console_url: str, group: str, topic: str, to: str) -> None:
    """From the group page: the reset link, then a dry run of ``to`` on ``topic``."""
    browser.get(f"{console_url}/groups/{group}")
    by_id(browser, "reset-link").click()
    wait_until(lambda: browser.find_elements("id", "dry-run"), timeout_s=30)
    choose(browser, "topic", topic)
    choose(browser, "to", to)
    submit_and_wait(browser, "dry-run")


def plan_cells(browser, cell_class: str) -> dict[int, str]:
    from selenium.webdriver.common.by import By

    return {int(row.get_attribute("data-partition")):
            row.find_element(By.CSS_SELECTOR, f"td.{cell_class}").text
            for row in browser.find_elements(By.CSS_SELECTOR, "#plan tr.plan-row")}


def test_a_reset_through_dry_run_and_apply_commits_the_planned_offsets(
        browser, console_url, browser_broker, admin, records_topic, screenshot):
    from selenium.webdriver.common.by import By

    group = idle_group(admin, records_topic, {0: 12})
    # When the dry run asks for the earliest offsets
    dry_run_in_browser(browser, console_url, group, records_topic, "earliest")
    # Then it shows the committed and the new offset, and changes nothing
    assert plan_cells(browser, "current") == {0: "12"} and plan_cells(browser, "new") == {0: "0"}
    assert described_offsets(browser_broker.url, group, records_topic) == {0: 12}
    screenshot("console-group-reset-dry-run")
    # When it is applied
    submit_and_wait(browser, "apply")
    # Then the page and `plinth group describe` both show the new offset
    rows = browser.find_elements(By.CSS_SELECTOR, "#reset-result tr.reset-row")
    assert [r.find_element(By.CSS_SELECTOR, "td.committed").text for r in rows] == ["0"]
    assert described_offsets(browser_broker.url, group, records_topic) == {0: 0}
    screenshot("console-group-reset-applied")


def test_a_reset_is_refused_with_the_clis_message_while_a_member_is_active(
        browser, console_url, browser_broker, admin, records_topic, screenshot):
    from plinth import Consumer

    group = idle_group(admin, records_topic, {0: 3})
    dry_run_in_browser(browser, console_url, group, records_topic, "latest")
    assert plan_cells(browser, "new") == {0: str(RECORDS)}
    with Consumer(records_topic, broker=browser_broker.url, group=group,
                  enable_auto_commit=False):
        wait_until(lambda: admin.describe_group(group).members, timeout_s=30)
        # When the apply is clicked while the member is there
        submit_and_wait(browser, "apply")
        # Then the page says what `plinth group reset` says, and nothing changed
        cli = plinth_cli(browser_broker.url, "group", "reset", group, "--topic", records_topic,
                         "--to-latest")
        assert cli.returncode == 1, cli.stdout
        message = cli.stderr.strip().removeprefix("error: ")
        assert message.startswith("GroupNotEmptyError: ")
        assert heading(browser) == "Bad request"
        assert message in by_id(browser, "content").text
        screenshot("console-group-reset-refused")
    assert described_offsets(browser_broker.url, group, records_topic) == {0: 3}


def test_the_lag_chart_moves_while_the_test_produces(browser, console_url, browser_broker,
                                                     admin, screenshot):
    from plinth import Producer

    # Given a group page for a group that committed offset 0 on a topic of its own
    topic = unique_topic("lagging")
    admin.create_topic(topic, 1)
    group = idle_group(admin, topic, {0: 0})
    browser.get(f"{console_url}/groups/{group}")
    assert by_id(browser, "lag-now").text == "0"

    def lag_now() -> int:
        # In one script: the page's stream replaces the chart's content after every
        # sample (an element found in one call may be gone by the next)
        return int(browser.execute_script(
            "var n = document.getElementById('lag-now'); return n ? n.textContent : -1;"))

    def points() -> int:
        return len(browser.execute_script(
            "var l = document.querySelector('#lag-chart polyline');"
            "return l ? l.getAttribute('points').trim().split(/\\s+/) : [];"))

    stop = threading.Event()

    def produce():
        with Producer(broker=browser_broker.url, linger_ms=5) as producer:
            while not stop.is_set():
                for i in range(50):
                    producer.send(topic, b"late %d" % i)
                producer.flush()

    writer = threading.Thread(target=produce, daemon=True)
    writer.start()
    try:
        # Then each sample its stream sends (every CONSOLE_LAG_POLL_S) adds a point
        # with a higher lag
        wait_until(lambda: lag_now() > 0 and points() >= 2, timeout_s=30,
                   explain=lambda: f"lag {lag_now()}, points {points()}")
        first = lag_now()
        wait_until(lambda: lag_now() > first and points() >= 3, timeout_s=30,
                   explain=lambda: f"lag {lag_now()} (from {first}), points {points()}")
    finally:
        stop.set()
        writer.join(30)

    def figures() -> list[str]:
        # The chart's newest lag, the total-lag tile and the table's lag cell, read in
        # one script: the stream sends them after each sample, one event each
        return browser.execute_script(
            "return ['lag-now', 'total-lag'].map(function (id) {"
            "  var n = document.getElementById(id); return n ? n.textContent : ''; })"
            ".concat([(document.querySelector('#lag .lag-row .lag') || {}).textContent]);")

    # And the tiles and the table move with it: once the writer stopped, all three
    # settle on the topic's end offset (the group committed 0)
    end = str(admin.list_offsets(topic, 0).end_offset)
    wait_until(lambda: [f.strip() for f in figures()] == [end, end, end], timeout_s=30,
               explain=lambda: f"figures {figures()}, end {end}")
    screenshot("console-group-lag-chart")
