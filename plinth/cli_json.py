"""``--json`` of ``plinth status``, ``topic list|describe`` and ``group list|describe``:
one JSON document on stdout, built here from what Admin returns, so that a script
need not parse columns whose widths shift with the addresses.

Runs in the user's shell process (plinth/cli.py and cli_groups.py call it). The
shapes are README's (Operations) and stay stable: keys in snake_case, a unit in
the name of a value that has one (``size_bytes``, ``upload_lag_s``,
``records_per_s``), offsets as integers, and null for a value not known (a DOWN
shard's bytes), never 0: 0 bytes is a fact about a shard, null says nobody measured.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from plinth import topics

if TYPE_CHECKING:   # annotations only: the CLI loads the wire protocol when it asks
    from plinth import protocol

# The one option of every command here, as `plinth bench --json` names it.
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON document instead of the table "
                                "(README: Operations).")


def echo_json(document: dict) -> None:
    """Print ``document`` on stdout as one line, as ``plinth bench --json`` does. Called
    only once every answer is in: an error before it leaves stdout empty."""
    click.echo(json.dumps(document))


def known(value, is_known: bool):
    """``value``, or None where it was not measured: a DOWN shard's bytes and rates
    arrive as 0, which would read as an empty, idle shard."""
    return value if is_known else None


def _or_none(text: str) -> str | None:
    """An optional name or address: "" on the wire means there is none."""
    return text or None


# --- plinth status ---------------------------------------------------------------

def status_json(info: protocol.StatusInfo) -> dict:
    """``plinth status --json``: nodes, shards, routers, the partition counts and the
    server's claim on its tier store (null without one)."""
    return {
        "nodes": [{"name": _or_none(info.node_names.get(node_id, "")), "node_id": node_id,
                   "address": address, "alive": alive} for node_id, address, alive in info.nodes],
        "shards": [shard_json(shard) for shard in info.shards],
        "routers": [{"address": address, "node_address": node} for address, node in info.routers],
        "under_replicated_partitions": info.under_replicated_partitions,
        "offline_partitions": info.offline_partitions,
        "tier_store_claim": ({"held": info.tier_claim_held, "state": info.tier_claim}
                             if info.tier_claim else None),
    }


def shard_json(shard: protocol.ShardStatus) -> dict:
    """One shard of ``status_json``. What the shard measures itself (bytes, rates,
    requests, uploads) is null while it is DOWN: only its answer carries them."""
    up = shard.alive
    return {
        "shard_id": shard.shard_id, "alive": up, "draining": shard.draining,
        "draining_reason": _or_none(shard.draining_reason) if shard.draining else None,
        "down_reason": None if up else _or_none(shard.down_reason),
        "node": _or_none(shard.node), "pid": shard.pid or None,   # 0: not known
        "address": shard.address, "direct_address": _or_none(shard.direct_address),
        "partitions": shard.partitions,
        "size_bytes": known(shard.size_bytes, up),
        "records_per_s": known(shard.records_per_s, up),
        "bytes_per_s": known(shard.bytes_per_s, up),
        "records_out_per_s": known(shard.records_out_per_s, up),
        "bytes_out_per_s": known(shard.bytes_out_per_s, up),
        "requests_direct": known(shard.requests_direct, up),
        "requests_via_router": known(shard.requests_via_router, up),
        "remote_bytes": known(shard.remote_bytes, up),
        "upload_lag_bytes": known(shard.upload_lag_bytes, up),
        "upload_lag_s": known(shard.upload_lag_s, up),
        "upload_errors": known(shard.upload_errors, up),
        # remote_bytes may lack these partitions' segments (not listed yet)
        "remote_partitions_not_listed": known(shard.remote_partitions_not_listed, up),
        "partitions_appends_failing": known(shard.partitions_appends_failing, up),
        "disk_free_bytes": known(shard.disk_free_bytes, up and shard.disk_total_bytes > 0),
        "disk_total_bytes": known(shard.disk_total_bytes, up and shard.disk_total_bytes > 0),
        "disk_reserve_bytes": known(shard.disk_reserve_bytes, up and shard.disk_total_bytes > 0),
    }


# --- plinth topic describe -------------------------------------------------------

def every_config(info: protocol.TopicInfo) -> dict[str, str]:
    """Every key with its value: those the broker does not store (a factor-1 topic's
    replication keys, the fixed ones) at their defaults, as Kafka's DescribeConfigs
    shows them (the table prints the same)."""
    return {**topics.unstored_config_defaults(info.config), **info.config}


def replication_factor(info: protocol.TopicInfo) -> int:
    """The topic's copies: its partitions' replica count (1 for an unreplicated topic)."""
    return len(info.partition_info[0].replicas) if info.partition_info else 1


def topic_json(info: protocol.TopicInfo) -> dict:
    """``plinth topic describe --json``: the topic, its config, and its partitions."""
    return {
        "name": info.name, "topic_id": _or_none(info.topic_id),   # "": a broker before ids
        "partition_count": info.partitions, "replication_factor": replication_factor(info),
        "config": dict(sorted(every_config(info).items())),
        "partitions": [partition_json(p) for p in info.partition_info],
    }


def partition_json(p: protocol.PartitionInfo) -> dict:
    """One partition of ``topic_json``. An offline partition (no leader) has no log
    anyone reads: its offsets and bytes are null, as the table's "-"; remote offsets
    are null while nothing is in object storage, and all remote fields while its
    shard has not listed the store (the table's "?"; ``remote_not_listed`` says why)."""
    up, listed = bool(p.shard), not p.remote_not_listed
    remote = p.has_remote and listed
    return {
        "partition": p.partition, "leader": _or_none(p.shard), "leader_epoch": p.leader_epoch,
        "replicas": list(p.replicas), "in_sync_replicas": list(p.in_sync_replicas),
        "start_offset": known(p.start_offset, up), "end_offset": known(p.end_offset, up),
        "high_watermark": known(p.high_watermark, up), "size_bytes": known(p.size_bytes, up),
        "local_start_offset": known(p.local_start_offset, up),
        "remote_start_offset": known(p.remote_start_offset, up and remote),
        "remote_end_offset": known(p.remote_end_offset, up and remote),
        "remote_bytes": known(p.remote_bytes, up and listed),
        "remote_not_listed": _or_none(p.remote_not_listed),
    }


# --- plinth group describe -------------------------------------------------------

def group_json(info: protocol.GroupInfo, rows: list[tuple]) -> dict:
    """``plinth group describe --json``: the group, its members, and per partition
    (``rows``: Admin.group_lag) the committed offset (null: none), log end offset,
    lag (null without a committed offset) and the member it is assigned to (null:
    none)."""
    owner = {tp: member.member_id for member in info.members for tp in member.assignment}
    return {
        "group": info.group, "assignor": info.assignor or None, "epoch": info.epoch,
        "state": _or_none(info.state), "protocol_type": _or_none(info.protocol_type),
        "members": [{"member_id": m.member_id, "member_epoch": m.member_epoch,
                     "topics": sorted(m.topics),
                     "assignment": [{"topic": t, "partition": p} for t, p in sorted(m.assignment)]}
                    for m in info.members],
        "partitions": [{"topic": topic, "partition": partition, "committed_offset": committed,
                        "end_offset": end, "lag": lag,
                        "member_id": owner.get((topic, partition))}
                       for topic, partition, committed, end, lag in rows],
    }


# --- plinth topic list, group list -----------------------------------------------

def names_json(key: str, names: list[str], next_after: str | None,
               unanswered: list[str] | None = None) -> dict:
    """A list's names under ``key`` ("topics", "groups") and ``next_after``: the
    --after of the next page, null when no names follow (the cursor the table prints
    on stderr). ``unanswered`` (group list only): the shards whose groups are
    missing, [] when every shard answered."""
    document = {key: names, "next_after": next_after}
    if unanswered is not None:
        document["unanswered_shards"] = sorted(unanswered)
    return document
