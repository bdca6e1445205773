"""plinth/actor_logs.py: outside a Ray actor (the unit tests' in-process controllers and
shards) only stderr is set up, and no file appears under the data dir; in an actor each
gets its own file (tests/loadtest/test_idle_broker.py runs a real broker for that)."""

from __future__ import annotations

import logging

from plinth import actor_logs


def test_outside_a_ray_actor_no_log_file_is_made_and_no_handler_added(tmp_path):
    # Given a process that is no Ray actor (this test's)
    handlers_before = list(logging.getLogger().handlers)
    # When the controller's logging is configured for a data dir
    path = actor_logs.configure(tmp_path, "controller")
    # Then there is no file, no logs directory, and no file handler on the root logger
    assert path is None and not (tmp_path / actor_logs.LOG_DIR).exists()
    assert not [h for h in logging.getLogger().handlers
                if h not in handlers_before and hasattr(h, "baseFilename")]
