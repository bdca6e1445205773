"""Fixtures for the browser tests: a real broker, ``plinth console`` beside it, and
headless Chromium from Debian's packages driven by selenium.

Chromium is started with every background service off (--disable-background-
networking, --disable-component-update, --disable-sync, no QUIC) and a fresh
profile: on a machine without internet those services stall its start. Each
test saves screenshots under $PLINTH_TEST_ARTIFACTS (default tests/artifacts/).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.debian_packages import ensure_chromium
from tests.support import free_port, start_until_ready

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,900")


def artifacts_dir() -> Path:
    path = Path(os.environ.get("PLINTH_TEST_ARTIFACTS")
                or Path(__file__).resolve().parents[1] / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser_broker(ray_cluster, tmp_path_factory):
    broker = Broker(tmp_path_factory.mktemp("browser"), ray_cluster, shards=2).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def console_url(browser_broker):
    """``plinth console`` on the module's broker, sampling every 0.5 s (its real
    process and HTTP server: the browser needs a socket)."""
    port = free_port()
    proc, output = start_until_ready(
        [sys.executable, "-m", "plinth.cli", "console", "--broker", browser_broker.url,
         "--listen", f"127.0.0.1:{port}", "--sample-interval-s", "0.5"],
        "plinth console ready", timeout_s=60)
    yield f"http://127.0.0.1:{port}"
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (module scope: starting it costs a second or two)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    ensure_chromium()
    profile = tempfile.mkdtemp(prefix="plinth-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def screenshot(browser):
    """``screenshot(name)`` saves the browser's page as <artifacts>/<name>.png."""
    def save(name: str) -> Path:
        path = artifacts_dir() / f"{name}.png"
        browser.save_screenshot(str(path))
        return path

    return save
