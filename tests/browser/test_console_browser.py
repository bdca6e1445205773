"""The console in a real browser (headless Chromium) against a real broker with
real topics and groups: every page loads, a live chart moves while records are
produced, and a topic is created and deleted through the confirmations. Each
page's screenshot is saved as a test artifact."""

from __future__ import annotations

import threading

import pytest

from tests.support import unique_topic, wait_until


@pytest.fixture(scope="module")
def populated(browser_broker):
    """A topic with records and a consumer group that committed offsets on it."""
    from plinth import Admin, Consumer, Producer

    topic, group = unique_topic("shown"), unique_topic("readers")
    with Admin(broker=browser_broker.url) as admin:
        admin.create_topic(topic, partitions=3, config={"retention.ms": "86400000"})
    with Producer(broker=browser_broker.url, linger_ms=1) as producer:
        for i in range(300):
            producer.send(topic, b'{"n": %d}' % i, key=b"k%d" % (i % 7),
                          headers=[("source", b"browser-test")])
        producer.flush()
    with Consumer(topic, broker=browser_broker.url, group=group, auto_offset_reset="earliest",
                  enable_auto_commit=False) as consumer:
        wait_until(lambda: sum(len(v) for v in consumer.poll(timeout_ms=500).values()) > 0,
                   timeout_s=30)
        consumer.commit()
    return {"topic": topic, "group": group}


def heading(browser) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.TAG_NAME, "h1").text


def wait_for_heading(browser, title: str) -> None:
    """Wait for the page after a click to show ``title`` (read in one script: the
    old page's <h1> goes stale while the new one loads)."""
    def now() -> str:
        return browser.execute_script(
            "var h = document.querySelector('h1'); return h ? h.innerText : '';")

    wait_until(lambda: now() == title, timeout_s=30, explain=now)


def test_every_page_loads_and_is_saved_as_a_screenshot(browser, console_url, populated,
                                                       screenshot):
    topic, group = populated["topic"], populated["group"]
    pages = [("overview", "/", "Overview"), ("topics", "/topics", "Topics"),
             ("topic", f"/topics/{topic}", f"Topic {topic}"),
             ("topic-new", "/topics/new", "Create topic"),
             ("browse-index", "/browse", "Message browser"),
             ("browse", f"/browse/{topic}", f"Browse {topic}"),
             ("groups", "/groups", "Consumer groups"),
             ("group", f"/groups/{group}", f"Group {group} Empty")]
    for name, path, title in pages:
        browser.get(console_url + path)
        assert heading(browser) == title, (path, browser.page_source[:500])
        screenshot(f"console-{name}")


def test_the_topic_list_shows_the_topic_with_its_partitions(browser, console_url, populated):
    from selenium.webdriver.common.by import By

    browser.get(f"{console_url}/topics?q={populated['topic']}")
    row = browser.find_element(By.CSS_SELECTOR, "#topic-table tbody tr")
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[0].startswith(populated["topic"]) and cells[1] == "3"


def test_typing_in_the_search_box_narrows_the_topic_list_in_place(browser, console_url,
                                                                  browser_broker, populated):
    from selenium.webdriver.common.by import By

    from plinth import Admin

    prefix = unique_topic("searched")
    with Admin(broker=browser_broker.url) as admin:
        for suffix in ("a", "b"):
            admin.create_topic(f"{prefix}-{suffix}")
    browser.get(f"{console_url}/topics")
    marker = browser.execute_script("window.notReloaded = true; return window.notReloaded;")
    browser.find_element(By.NAME, "q").send_keys(prefix)

    def names_shown() -> list[str]:
        # In one script: htmx swaps the table while it is read
        return browser.execute_script(
            "return [...document.querySelectorAll('#topic-table td a')].map(a => a.innerText);")

    # Then htmx swaps the table (no page load: the script's variable survives)
    wait_until(lambda: names_shown() == [f"{prefix}-a", f"{prefix}-b"], timeout_s=15,
               explain=names_shown)
    assert marker and browser.execute_script("return window.notReloaded === true;")


def test_a_live_chart_updates_while_records_are_produced(browser, console_url, browser_broker,
                                                         populated, screenshot):
    from plinth import Producer

    browser.get(console_url + "/")

    def drawn_points() -> int:
        return int(browser.execute_script(
            "var s = document.querySelector('#charts svg');"
            "return s && s.dataset.points ? s.dataset.points : 0;"))

    def records_in_tile() -> str:
        return browser.execute_script(
            "var t = [...document.querySelectorAll('.tile')].find("
            "  e => e.textContent.includes('records/s in'));"
            "return t ? t.querySelector('.n').textContent : '';")

    stop = threading.Event()

    def produce():
        with Producer(broker=browser_broker.url, linger_ms=5) as producer:
            while not stop.is_set():
                for i in range(200):
                    producer.send(populated["topic"], b"live %d" % i)
                producer.flush()

    writer = threading.Thread(target=produce, daemon=True)
    writer.start()
    try:
        # Then the chart grows sample by sample (SSE) and the rate shown leaves zero
        before = drawn_points()
        wait_until(lambda: drawn_points() >= before + 3, timeout_s=30,
                   explain=lambda: f"points {drawn_points()} (from {before})")
        wait_until(lambda: records_in_tile() not in ("", "0.0"), timeout_s=30,
                   explain=records_in_tile)
    finally:
        stop.set()
        writer.join(30)
    screenshot("console-overview-live")


def test_a_topic_page_shows_new_end_offsets_without_a_reload(browser, console_url,
                                                            browser_broker, populated):
    from plinth import Producer

    topic = populated["topic"]
    browser.get(f"{console_url}/topics/{topic}")
    browser.execute_script("window.notReloaded = true;")

    def end_of_partition_0() -> int:
        return int(browser.execute_script(
            "return document.querySelector('#partition-table tbody tr').cells[5].textContent;"))

    before = end_of_partition_0()
    with Producer(broker=browser_broker.url, linger_ms=1) as producer:
        for i in range(10):
            producer.send(topic, b"more %d" % i, partition=0)
        producer.flush()
    # Then the stream brings the new end offset into the open page
    wait_until(lambda: end_of_partition_0() == before + 10, timeout_s=20,
               explain=lambda: f"end {end_of_partition_0()} (from {before})")
    assert browser.execute_script("return window.notReloaded === true;")


def test_a_topic_is_created_and_deleted_through_the_confirmations(browser, console_url,
                                                                  browser_broker, screenshot):
    from selenium.webdriver.common.by import By

    from plinth import Admin

    name = unique_topic("clicked")
    browser.get(console_url + "/topics/new")
    browser.find_element(By.NAME, "name").send_keys(name)
    partitions = browser.find_element(By.NAME, "partitions")
    partitions.clear()
    partitions.send_keys("2")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for_heading(browser, f"Create topic {name}?")
    screenshot("console-topic-create-confirm")
    with Admin(broker=browser_broker.url) as admin:
        assert name not in admin.list_topics()
        browser.find_element(By.ID, "confirm").click()
        wait_for_heading(browser, f"Topic {name}")
        assert admin.describe_topic(name).partitions == 2
        # Delete: the confirmation asks for the name
        browser.find_element(By.LINK_TEXT, "Delete topic…").click()
        wait_for_heading(browser, f"Delete topic {name}?")
        browser.find_element(By.NAME, "confirm_name").send_keys(name)
        screenshot("console-topic-delete-confirm")
        browser.find_element(By.ID, "confirm").click()
        wait_for_heading(browser, "Topics")
        assert name not in admin.list_topics()
