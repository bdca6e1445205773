"""Screenshots of the web console under load, for the README.

Starts a fresh ``plinth serve`` (its console on a free loopback port), puts
``plinth bench e2e`` load on a topic for about a minute while a consumer group
reads it, and saves PNGs of the overview, the topic, the message browser and
the group into loadtest/screenshots/ (console-overview.png, console-topic.png,
console-browse.png, console-group.png), taken by headless Chromium from Debian
(/usr/bin/chromium and /usr/bin/chromedriver, selenium).

    python loadtest/console_screenshots.py [--plinth plinth] [--seconds 60]

The browse shot is the newest of 40 JSON records with headers (a topic of its
own: the bench's values are random bytes); the group shot waits (at most
GROUP_CHART_WAIT_S) for the lag chart to hold GROUP_CHART_POINTS samples. A page
that shows an error instead (a build without the page: its 404) is still saved,
and the script names it and exits 1.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from loadtest.fresh_broker import fresh_broker  # noqa: E402
from loadtest.redis_peer import free_port  # noqa: E402

TOPIC, GROUP = "orders", "billing"
BROWSED = "payments"   # JSON records with headers: the bench's random bytes show as hex
GROUP_CHART_POINTS = 4       # samples on the lag chart before its shot (one per 2 s)
GROUP_CHART_WAIT_S = 30.0
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--window-size=1280,900", "--hide-scrollbars")


def browser(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def produce_readable_records(url: str, count: int = 40) -> None:
    """What the browse shot shows: JSON payments with a key and headers."""
    import json

    from plinth import Producer

    with Producer(broker=url) as producer:
        for i in range(count):
            value = {"payment_id": 9_000 + i, "customer": f"customer-{i % 7}",
                     "amount_cents": 1_250 + 37 * i, "currency": "EUR"}
            producer.send(BROWSED, json.dumps(value).encode(), key=f"customer-{i % 7}".encode(),
                          headers=[("source", b"checkout"), ("trace-id", f"{i:016x}".encode())])
        producer.flush()


def read_as_group(url: str, stop: threading.Event) -> None:
    """A group member reading the topic at its own pace, committing as it goes (so the
    group has members, committed offsets and some lag to show)."""
    from plinth import Consumer

    with Consumer(TOPIC, broker=url, group=GROUP, auto_offset_reset="earliest") as consumer:
        while not stop.is_set():
            consumer.poll(timeout_ms=500, max_records=2_000)
            time.sleep(0.2)   # slower than the producers: a lag worth a chart


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plinth", default=shutil.which("plinth") or "plinth")
    parser.add_argument("--seconds", type=float, default=60.0, help="load before the shots")
    parser.add_argument("--out", type=Path, default=HERE / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="plinth-shots-"))
    port = free_port()
    try:
        with fresh_broker(args.plinth, work, "--console-listen", f"127.0.0.1:{port}") as (_, url):
            return shoot(args, url, f"http://127.0.0.1:{port}", work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def shoot(args, url: str, console: str, work: Path) -> int:
    from plinth import Admin

    with Admin(broker=url) as admin:
        admin.create_topic(TOPIC, partitions=6)
        admin.create_topic(BROWSED, partitions=1)
    produce_readable_records(url)
    bench = subprocess.Popen([args.plinth, "--broker", url, "bench", "produce", "--topic", TOPIC,
                              "--rate", "20000", "--duration-s", str(args.seconds + 30),
                              "--value-bytes", "200"], stdout=subprocess.DEVNULL, cwd=work)
    stop = threading.Event()
    reader = threading.Thread(target=read_as_group, args=(url, stop), daemon=True)
    reader.start()
    driver = browser(str(work / "chromium"))
    failed = []
    try:
        driver.get(console + "/")            # its stream starts the sampler: the charts fill
        time.sleep(args.seconds)             # the load being pictured, not a wait for a state
        driver.save_screenshot(str(args.out / "console-overview.png"))
        for name, path in (("topic", f"/topics/{TOPIC}"), ("browse", f"/browse/{BROWSED}?view=json"),
                           ("group", f"/groups/{GROUP}")):
            driver.get(console + path)
            if name == "group":
                wait_for_lag_chart(driver)
            else:
                time.sleep(3)                # a live update of the page (SSE, every 2 s)
            driver.save_screenshot(str(args.out / f"console-{name}.png"))
            if driver.find_elements("css selector", "section.error"):
                failed.append(f"{path}: {driver.find_element('tag name', 'h1').text}")
    finally:
        driver.quit()
        stop.set()
        bench.terminate()
        bench.wait(60)
        reader.join(30)
    print("\n".join(str(p) for p in sorted(args.out.glob("console-*.png"))))
    if failed:
        print("error pages instead of the console's:\n" + "\n".join(failed), file=sys.stderr)
    return 1 if failed else 0


def wait_for_lag_chart(driver) -> None:
    """Until the group page's lag chart (sent again by its stream after each sample)
    holds GROUP_CHART_POINTS samples, or GROUP_CHART_WAIT_S pass (then the shot shows
    what there is)."""
    deadline = time.monotonic() + GROUP_CHART_WAIT_S
    while time.monotonic() < deadline:
        points = driver.execute_script(
            "var l = document.querySelector('#lag-chart polyline');"
            "return l ? l.getAttribute('points').trim().split(/\\s+/).length : 0;")
        if points >= GROUP_CHART_POINTS:
            return
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
