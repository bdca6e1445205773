"""plinth/version.py: one version, which pyproject.toml and ``plinth --version`` say too."""

from __future__ import annotations

import tomllib
from pathlib import Path

from click.testing import CliRunner

from plinth import __version__
from plinth.cli import main
from plinth.version import VERSION

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_pyproject_gives_the_package_the_version_plinth_says():
    # (0.2.0: the first with metadata.json version 2, which older builds refuse)
    assert tomllib.loads(PYPROJECT.read_text())["project"]["version"] == VERSION == "0.2.0"
    assert __version__ == VERSION


def test_plinth_version_prints_it_and_exits_0_without_a_broker():
    # When plinth --version runs (no broker listens) / Then it prints the version only
    result = CliRunner().invoke(main, ["--version"])
    assert (result.exit_code, result.output) == (0, f"plinth {VERSION}\n")
