"""Debian packages the tests need and pip cannot give: installed on first use.

The README's test command (`pip install -e '.[test]' && python -m pytest`) is the
whole set-up on a fresh machine, so what the tests need beyond PyPI is installed
by the tests themselves, here, with apt-get (the machine's Debian mirror; root).
Called from the test process, before the first test that needs the package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

APT_TIMEOUT_S = 900


def ensure_installed(packages: tuple[str, ...], executables: tuple[str, ...]) -> None:
    """apt-get install ``packages`` unless every path in ``executables`` exists; a
    RuntimeError naming what failed (and apt's last lines) if they cannot be had."""
    if all(Path(path).exists() for path in executables):
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError(f"{', '.join(executables)} missing and cannot be installed here "
                           f"(needs apt-get as root): install {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", *packages]):
        done = subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=APT_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout)[-2000:]}")
    missing = [path for path in executables if not Path(path).exists()]
    if missing:
        raise RuntimeError(f"apt-get installed {' '.join(packages)} but {missing} are absent")


def ensure_chromium() -> None:
    """Debian's Chromium and its ChromeDriver (the console's browser tests)."""
    ensure_installed(("chromium", "chromium-driver"), ("/usr/bin/chromium", "/usr/bin/chromedriver"))
