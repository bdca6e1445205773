"""Plinth's version: one place, which every part may import (plinth/__init__.py
imports the client, which the broker's parts may not). pyproject.toml says the same
(tests/plinth/test_version.py); ``plinth --version`` prints it, and the metrics
endpoint exports it (``plinth_build_info{version}``).

It changes whenever a data-dir format or the wire protocol changes, so that builds
that cannot share a data dir, or talk to each other, are told apart by it. A
data-dir format change also raises metadata.json's version (control/metadata.py,
"Format versions"), which every older build refuses to start on: 0.2.0 is the
first with metadata.json version 2.
"""

VERSION = "0.2.0"
