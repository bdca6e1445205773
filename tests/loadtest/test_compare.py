"""loadtest/compare.py starts, as a script and as a module (its --help: nothing runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("how", [["loadtest/compare.py"], ["-m", "loadtest.compare"]])
def test_compare_starts_as_a_script_and_as_a_module(how):
    # (as a module it found no redis_peer: only a script's own folder is on sys.path)
    done = subprocess.run([sys.executable, *how, "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: compare.py")
