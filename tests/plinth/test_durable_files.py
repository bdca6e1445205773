"""plinth/durable_files.py: JSON replaced atomically, written compact."""

from __future__ import annotations

import json

from plinth.durable_files import write_json_atomically


def test_json_is_written_compact_with_sorted_keys_and_replaces_the_old_file_whole(tmp_path):
    # Given a file holding a larger value
    path = tmp_path / "metadata.json"
    write_json_atomically(path, {"topics": {f"t{i}": {"partitions": i} for i in range(100)}})
    # When a smaller value replaces it
    write_json_atomically(path, {"b": [1, 2], "a": {"y": "z"}})
    # Then the file holds exactly that, compact (json's C encoder) with keys sorted,
    # and no temporary file is left beside it
    assert path.read_text() == '{"a":{"y":"z"},"b":[1,2]}'
    assert json.loads(path.read_text()) == {"a": {"y": "z"}, "b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["metadata.json"]
