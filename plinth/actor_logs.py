"""Where the controller's and the shards' log lines go: to their process's stderr, as
before, and, in a Ray actor, to a file of their own under the broker's data dir:

    <data dir>/logs/controller.log     the controller (control/controller.py)
    <data dir>/logs/<shard id>.log     each shard (shards/actor.py), on its node

each rotated at ACTOR_LOG_BYTES_MAX, with ACTOR_LOG_BACKUPS_MAX older files kept
(``controller.log.1`` ...). The embedded broker does not run Ray's log monitor
(plinth/server.py), the process that copied every actor's stderr into the
server's output ten times a second: these files are where an operator reads a
shard's errors and the controller's warnings. Ray also keeps each worker's
stderr in its session's logs directory, but under the worker's id, not a name.

``configure`` runs once per actor process, at the start of its constructor (its
actor thread). Outside a Ray actor (the unit tests' in-process controllers and
shards) it only sets up stderr, as before: no file handler piles up per test.
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from plinth import limits
from plinth.data_dir_mode import make_data_dir

LOG_DIR = "logs"
_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"   # grep-able levels


def configure(broker_data_dir: Path, name: str) -> Path | None:
    """Log INFO and above to stderr and, in a Ray actor, to
    ``<broker_data_dir>/logs/<name>.log``; returns that file's path (None outside an actor)."""
    logging.basicConfig(level=logging.INFO, format=_FORMAT)
    if not _in_ray_actor():
        return None
    path = Path(broker_data_dir) / LOG_DIR / f"{name}.log"
    root = logging.getLogger()
    if any(getattr(h, "baseFilename", None) == str(path.resolve()) for h in root.handlers):
        return path   # configured already (a second constructor in one process)
    make_data_dir(broker_data_dir)   # the first thing a shard on a new node makes
    path.parent.mkdir(exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=limits.ACTOR_LOG_BYTES_MAX, backupCount=limits.ACTOR_LOG_BACKUPS_MAX)
    handler.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(handler)
    return path


def _in_ray_actor() -> bool:
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
