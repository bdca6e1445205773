"""The Cap'n Proto schemas of the wire protocol and the log, loaded once.

Importable as ``plinth.schemas``; any process (client, router, shard actor)
may import it. The ``.capnp`` files beside this module are the public
protocol: each documents its byte layout at the top.
"""

from pathlib import Path

import capnp

capnp.remove_import_hook()

SCHEMA_DIR = Path(__file__).resolve().parent

protocol = capnp.load(str(SCHEMA_DIR / "protocol.capnp"))
record_batch = capnp.load(str(SCHEMA_DIR / "record_batch.capnp"))
log_entry = capnp.load(str(SCHEMA_DIR / "log_entry.capnp"))

__all__ = ["SCHEMA_DIR", "protocol", "record_batch", "log_entry"]
