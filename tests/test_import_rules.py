"""The imports between Plinth's parts flow one way, as the README's Architecture says.

    plinth.cli, plinth.server, plinth.bench      the entry points: may import anything
        plinth.client ──► plinth.format ◄── plinth.shards
        plinth.router ──► plinth.format (the Kafka listener converts batches)
        plinth.router ──► plinth.control (its handle and routing table)
        plinth.control ──► plinth.shards (only through the shard handle)
    shared ground, imported by all: plinth.limits, errors, protocol, protocol_hot, protocol_classic,
    topics, durable_files, json_fragments, wakeup, cluster_keys, data_dir_lock, actor_logs,
    process_tuning, socket_frames, unsent_replies, loopback, name_pages, secret_files,
    counted, actor_failures, log_limit, redacted_urls, data_dir_mode,
    and plinth.schemas

Every import statement counts, at module level or inside a function, so a
lazy import cannot hide a dependency. The graph is read from the source files
with ``ast``: nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Folder -> package, as pyproject.toml maps them.
PACKAGE_DIRS = {"plinth": "plinth", "format": "plinth.format", "shards": "plinth.shards",
                "router": "plinth.router", "control": "plinth.control",
                "client": "plinth.client", "schemas": "plinth.schemas"}
SHARED = {"plinth.limits", "plinth.errors", "plinth.protocol", "plinth.protocol_hot",
          "plinth.protocol_classic",
          "plinth.topics", "plinth.durable_files", "plinth.json_fragments", "plinth.wakeup",
          "plinth.schemas",
          "plinth.cluster_keys", "plinth.data_dir_lock", "plinth.actor_logs",
          "plinth.process_tuning", "plinth.socket_frames", "plinth.loopback",
          "plinth.name_pages", "plinth.unsent_replies", "plinth.secret_files",
          "plinth.counted", "plinth.actor_failures", "plinth.log_limit", "plinth.redacted_urls",
          "plinth.data_dir_mode", "plinth.socket_monitor", "plinth.version"}
# The package's faces (plinth/__init__.py: Producer, Consumer, Admin; plinth/aio.py: the
# asyncio client) and the commands.
ENTRY_POINTS = {"plinth", "plinth.cli", "plinth.cli_groups", "plinth.cli_json", "plinth.server",
                "plinth.bench", "plinth.process_reaper", "plinth.ray_messages", "plinth.aio"}
CLIENT_NAMES = {"plinth.Producer", "plinth.Consumer", "plinth.Admin", "plinth.NewTopic",
                "plinth.TopicPartition"}
# Which parts each part may import, besides itself and the shared ground.
ALLOWED = {
    "shared": set(),
    "plinth.format": set(),
    "plinth.shards": {"plinth.format"},
    "plinth.client": {"plinth.format"},
    "plinth.control": {"plinth.shards.shard_handle"},
    "plinth.router": {"plinth.control.controller_handle", "plinth.control.routing_table",
                      "plinth.control.placement", "plinth.format"},
}


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT)
    package = ".".join((PACKAGE_DIRS[relative.parts[0]],) + relative.parts[1:-1])
    stem = relative.stem
    return package if stem == "__init__" else f"{package}.{stem}"


def source_modules() -> dict[str, Path]:
    """Every module, in subpackages too (plinth.shards.tier)."""
    return {module_name(path): path for folder in PACKAGE_DIRS
            for path in sorted((ROOT / folder).rglob("*.py"))}


def test_modules_of_subpackages_are_checked_too():
    assert source_modules()["plinth.shards.tier.remote_store"] == \
        ROOT / "shards" / "tier" / "remote_store.py"


def imported_plinth_modules(path: Path) -> set[str]:
    """Every plinth module the file imports, anywhere in it; ``from plinth import x``
    counts as ``plinth.x``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "plinth"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "plinth":
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def part_of(module: str) -> str:
    """The part a module (or a name in one) belongs to: its package, 'shared' or 'entry'."""
    if module in CLIENT_NAMES:
        return "plinth.client"
    for package in ("plinth.format", "plinth.shards", "plinth.client", "plinth.control",
                    "plinth.router"):
        if module == package or module.startswith(package + "."):
            return package
    if any(module == shared or module.startswith(shared + ".") for shared in SHARED):
        return "shared"
    if any(module == entry or module.startswith(entry + ".") for entry in ENTRY_POINTS - {"plinth"}):
        return "entry"
    return "entry" if module == "plinth" else "unknown"


def allowed(importer: str, imported: str) -> bool:
    part = part_of(importer)
    if part == "entry":
        return True
    target = part_of(imported)
    if target in (part, "shared"):
        return True
    return any(imported == rule or imported.startswith(rule + ".") for rule in ALLOWED[part])


def violations(modules: dict[str, Path]) -> list[str]:
    out = []
    for importer, path in modules.items():
        for imported in sorted(imported_plinth_modules(path)):
            if not allowed(importer, imported):
                out.append(f"{importer} imports {imported}")
    return out


def test_every_import_between_the_parts_follows_the_architecture():
    assert violations(source_modules()) == []


def test_the_rule_catches_a_shard_module_importing_the_client(tmp_path):
    # Given a shard module that imports the client's producer
    path = ROOT / "shards" / "shard_server.py"
    bad = tmp_path / "shard_server.py"
    bad.write_text(path.read_text() + "\nfrom plinth.client.producer import Producer\n")
    # When the rule reads it in the shard module's place
    found = violations({"plinth.shards.shard_server": bad})
    # Then it names the import
    assert found == ["plinth.shards.shard_server imports plinth.client.producer.Producer"]


@pytest.mark.parametrize("importer,imported", [
    ("plinth.client.consumer", "plinth.shards.log_entry"),
    ("plinth.router.router", "plinth.client.connection"),
    ("plinth.control.controller", "plinth.shards.actor"),
    ("plinth.format.record_batch", "plinth.client._producer"),
    ("plinth.protocol", "plinth.format.record_batch"),
    ("plinth.shards.offset_store", "plinth.Producer"),
    ("plinth.shards.actor", "plinth.control.controller_handle"),
])
def test_imports_against_the_flow_are_refused(importer, imported):
    assert not allowed(importer, imported)


@pytest.mark.parametrize("importer,imported", [
    ("plinth.client.consumer", "plinth.format.record_batch"),
    ("plinth.shards.shard_server", "plinth.format.log_entry"),
    ("plinth.router.router", "plinth.control.controller_handle.ControllerHandle"),
    ("plinth.control.controller", "plinth.shards.shard_handle.ShardHandle"),
    ("plinth.server", "plinth.router.router"),
    ("plinth.shards.partition_log", "plinth.topics"),
])
def test_imports_with_the_flow_are_allowed(importer, imported):
    assert allowed(importer, imported)


def test_every_source_file_is_in_a_known_part():
    modules = source_modules()
    assert "plinth.format.record_batch" in modules and "plinth.shards.shard_server" in modules
    assert [m for m in modules if part_of(m) == "unknown"] == [], \
        "a module in plinth/ that is neither shared ground nor an entry point"
