"""Who may enter the data directory: its owner only.

The data dir holds every tenant's records (segments), the broker's metadata,
the shards' logs and its secrets. CurveZMQ and the ACL guard the network; on the
machine only the directory's mode does, so Plinth creates it mode 0700
(``make_data_dir``) and the files inside are then out of every other local user's
reach whatever their own modes (segments and logs are made with the umask's).

A data dir that is already there is left as it is: an operator may share it on
purpose (a backup user in its group). ``plinth serve`` then warns once at start
(``open_to_others``), naming the path, its mode and the ``chmod 700`` that closes
it, and goes on. It does not refuse, even with CurveZMQ and an ACL: every data dir
an older Plinth made is 0755, and a broker that will not start after an upgrade is
an outage its operator did not ask for.

Any process; the server's main thread and the controller's and shards' constructors.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DATA_DIR_MODE = 0o700


def make_data_dir(path: Path) -> None:
    """Create the data dir ``path`` mode 0700 (its missing parents as mkdir -p would)
    if it is not there; one that is, is left as it is (see the module)."""
    Path(path).mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)


def open_to_others(path: Path) -> str | None:
    """The warning for a data dir ``path`` that other users may read or enter (any
    group or other bit), naming it, its mode and the chmod that fixes it; None if only
    its owner may, or if it cannot be read (what uses it next says why)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    return (f"the data dir {path} has mode {mode:o}: other local users may read every "
            f"topic's records and the broker's files there, whatever CurveZMQ and the "
            f"ACL allow. Run `chmod {DATA_DIR_MODE:o} {path}` unless it is shared on purpose")
