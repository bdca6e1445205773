"""``plinth group list|describe|reset|delete|delete-offsets``: consumer groups from the
command line.

Runs in the user's shell process, through the Admin client.
"""

from __future__ import annotations

import shlex
import sys

import click

from plinth import limits, topics
from plinth.cli_json import echo_json, group_json, json_option, names_json
from plinth.control import placement
from plinth.errors import PlinthError, PlinthTimeoutError, RequestTimedOutError, UnknownTopicError

# Offsets are Int64 on the wire (schemas/protocol.capnp).
OFFSET_MAX = 2**63 - 1


@click.group("group")
def group_cli():
    """List, describe, reset and delete consumer groups and their offsets."""


def admin_for(ctx):
    """An Admin client for the command's --broker and keys (every client command uses it)."""
    from plinth.client.admin import Admin

    return Admin(broker=ctx.obj["broker"], request_timeout_ms=ctx.obj["request_timeout_ms"])


@group_cli.command("list")
@click.option("--prefix", default="", help="Only the groups whose names start with it.")
@click.option("--limit", type=click.IntRange(1, limits.ADMIN_LIST_PAGE_NAMES_MAX), default=None,
              help="At most this many names, a page of the list (1 to "
                   f"{limits.ADMIN_LIST_PAGE_NAMES_MAX}); with --after, the next page.")
@click.option("--after", default="", help="Only the names after it (the last of a page).")
@json_option
@click.pass_context
def group_list(ctx, prefix, limit, after, as_json):
    """Group names, sorted; with --prefix, --limit or --after, one page of them (as
    ``plinth topic list``). A shard that does not answer within a few seconds (stopped,
    hung, restarting) is left out: the groups it coordinates are missing, and a last
    line on stderr names it (the exit status stays 0, as topic list's)."""
    with admin_for(ctx) as admin:
        # Page by page, also without options: Admin.list_groups does not say which
        # shards its pages lacked.
        echo_pages(admin.list_groups_page, prefix, after, limit, "group list", as_json)


def echo_pages(ask_page, prefix: str, after: str, limit: int | None, command: str,
               as_json: bool = False) -> None:
    """Print the names of a page (``limit`` given, 1..ADMIN_LIST_PAGE_NAMES_MAX), or of
    every page of ``prefix`` walked ADMIN_LIST_PAGE_NAMES_MAX at a time (no limit: the
    whole search, never held whole, except as one JSON document). After a page with
    more behind it, a line saying how to get the next (``next_after`` in the JSON);
    then, if a page lacked the names of shards that did not answer
    (NamesPage.unanswered: a page of groups), a line naming them."""
    unanswered: set[str] = set()
    names: list[str] = []
    for page in _pages(ask_page, prefix, after, limit):
        unanswered.update(getattr(page, "unanswered", ()))
        if as_json:   # printed whole once the last page is in: none printed if one fails
            names += page.names
        else:
            for name in page.names:
                click.echo(name)
    next_after = page.names[-1] if page.more and limit else None
    groups = command == "group list"
    if as_json:
        echo_json(names_json("groups" if groups else "topics", names, next_after,
                             sorted(unanswered) if groups else None))
    elif next_after is not None:
        prefix_arg = f" --prefix {shlex.quote(prefix)}" if prefix else ""
        click.echo(f"# more: plinth {command}{prefix_arg} --limit {limit} "
                   f"--after {shlex.quote(next_after)}", err=True)
    _echo_unanswered(sorted(unanswered))   # with --json too: a warning, not the list


def _echo_unanswered(shards: list[str]) -> None:
    """The last line, on stderr, of a list of groups that lacks the groups of ``shards``
    (none if it lacks none)."""
    if shards:
        whose = "it coordinates" if len(shards) == 1 else "they coordinate"
        click.echo(f"# not answered: {', '.join(shards)} (stopped, hung or restarting: see "
                   f"plinth status); the groups {whose} are not listed", err=True)


def _pages(ask_page, prefix: str, after: str, limit: int | None):
    """The pages ``echo_pages`` prints: the one page of ``limit`` names, or every page
    walked ADMIN_LIST_PAGE_NAMES_MAX at a time. Only the last yielded may have
    ``more``: the page of a ``limit`` with names behind it."""
    step = limits.ADMIN_LIST_PAGE_NAMES_MAX if limit is None else limit
    for _ in range(limits.TOPICS_MAX * limits.SHARDS_MAX // step + 2):
        page = ask_page(prefix=prefix, after=after, limit=step)
        yield page
        if not page.more or limit:
            return
        after = page.names[-1]


@group_cli.command("describe")
@click.argument("name")
@json_option
@click.pass_context
def group_describe(ctx, name, as_json):
    """Members with their partitions; committed offset, log end offset and lag per partition."""
    with admin_for(ctx) as admin:
        try:
            info = admin.describe_group(name)
        except (PlinthTimeoutError, RequestTimedOutError) as exc:   # the router forwards
            # it to the coordinator, which did not answer: the client's timeout, or the
            # broker's
            raise type(exc)(f"group {name}: {_coordinator_said(admin, name)}{exc}") from None
        rows = admin.group_lag(name)
    if as_json:
        echo_json(group_json(info, rows))
        return
    click.echo(f"group {info.group}  assignor {info.assignor or '-'}  epoch {info.epoch}  "
               f"members {len(info.members)}")
    owner = {}
    for member in info.members:
        parts = ", ".join(f"{t}-{p}" for t, p in sorted(member.assignment)) or "-"
        click.echo(f"  member {member.member_id}  epoch {member.member_epoch}  partitions {parts}")
        # The whole id: Kafka clients' start alike (rdkafka-, kafka-python-...)
        owner.update({tp: member.member_id for tp in member.assignment})
    click.echo(f"{'topic':<24} {'partition':>9} {'committed':>12} {'end':>12} {'lag':>10}  member")
    for topic, partition, committed, end, lag in rows:
        click.echo(f"{topic:<24} {partition:>9} {_dash(committed):>12} {end:>12} {_dash(lag):>10}  "
                   f"{owner.get((topic, partition), '-')}")


def _coordinator_said(admin, group: str) -> str:
    """Which shard coordinates ``group``, and whether it answers status, as the start
    of an error's message ("" if the broker does not say): found as the router finds
    it (router.Router._route_group): the leader of the group's slot of the internal
    offsets topic (replicated offsets), else the rendezvous hash of its name over the
    shards that take writes. Each ask waits at most a status call's time, as a shard
    that does not answer is left out of status and describe."""
    try:
        shards = admin.status().shards
        try:
            offsets = admin.describe_topic(topics.OFFSETS_TOPIC)
        except UnknownTopicError:   # offsets not replicated: hashed onto the shards
            writing = [s.shard_id for s in shards if not s.draining]
            if not writing:
                return ""
            coordinator = placement.shard_for_group(group, writing)
        else:
            slot = topics.offsets_slot(group, offsets.partitions)
            coordinator = offsets.partition_info[slot].shard
            if not coordinator:
                return f"{topics.OFFSETS_TOPIC}-{slot}, which holds its offsets, has no leader; "
    except (PlinthError, ValueError):
        return ""
    down = not any(s.shard_id == coordinator and s.alive for s in shards)
    return (f"its coordinator {coordinator} " + ("does not answer plinth status either "
            "(stopped, hung or restarting); " if down else "answers plinth status; "))


def _dash(value) -> str:
    return "-" if value is None else str(value)


@group_cli.command("reset")
@click.argument("name")
@click.option("--topic", "topic_name", required=True)
@click.option("--to-earliest", is_flag=True)
@click.option("--to-latest", is_flag=True)
@click.option("--to-offset", type=click.IntRange(0, OFFSET_MAX), default=None)
@click.pass_context
def group_reset(ctx, name, topic_name, to_earliest, to_latest, to_offset):
    """Move the group's committed offsets on every partition of TOPIC.

    --to-offset beyond a partition's log is set to its end (before it: to its
    start), with a warning, as kafka-consumer-groups does. The group's coordinator
    refuses (GroupNotEmptyError) while it has members.
    """
    chosen = [to_earliest, to_latest, to_offset is not None]
    if sum(chosen) != 1:
        raise click.UsageError("give exactly one of --to-earliest, --to-latest, --to-offset N")
    with admin_for(ctx) as admin:
        offsets, clamped = {}, []
        for partition in range(admin.partition_count(topic_name)):
            info = admin.list_offsets(topic_name, partition, require_listed=to_earliest)
            if to_offset is None:
                offset = info.start_offset if to_earliest else info.end_offset
            else:   # kafka-consumer-groups' --to-offset: within the log, saying so
                offset = min(max(to_offset, info.start_offset), info.end_offset)
                if offset != to_offset:
                    clamped.append((partition, info.start_offset, info.end_offset))
            offsets[(topic_name, partition)] = offset
        admin.reset_group_offsets(name, offsets)
    for partition, start, end in clamped:
        click.echo(f"warning: {topic_name}-{partition} holds offsets {start}..{end}: "
                   f"{to_offset} is outside them, so the group's offset is set to "
                   f"{offsets[(topic_name, partition)]}", err=True)
    for (topic, partition), offset in sorted(offsets.items()):
        click.echo(f"{name} {topic}-{partition} -> {offset}")


@group_cli.command("delete")
@click.argument("name")
@click.pass_context
def group_delete(ctx, name):
    """Delete the group's committed offsets (kafka-consumer-groups --delete): its
    consumers then start from their auto_offset_reset. Refused while it has members."""
    with admin_for(ctx) as admin:
        admin.delete_group(name)
    click.echo(f"deleted group {name}")


@group_cli.command("delete-offsets")
@click.argument("name")
@click.option("--topic", "topic_name", required=True)
@click.option("--partition", "partitions", multiple=True,
              type=click.IntRange(0, limits.PARTITIONS_PER_TOPIC_MAX - 1),
              help="Only this partition of TOPIC (repeatable); default: all of TOPIC's.")
@click.pass_context
def group_delete_offsets(ctx, name, topic_name, partitions):
    """Delete the group's committed offsets of TOPIC (kafka-consumer-groups
    --delete-offsets, Kafka's OffsetDelete): its consumers then start those
    partitions from their auto_offset_reset. Prints each partition's outcome; exit
    status 1 if one was kept: the group's members subscribe to TOPIC (stop them
    first), or the partition does not exist. An offset never committed is no error
    (the line says there was none)."""
    with admin_for(ctx) as admin:
        try:
            numbers = partitions or range(admin.partition_count(topic_name))
        except UnknownTopicError as exc:
            raise UnknownTopicError(f"group {name}: no offsets of topic {topic_name!r} to "
                                    f"delete: {exc}") from None
        committed = admin.describe_group(name).committed   # to say what each line deleted
        outcomes = admin.delete_group_offsets(name, [(topic_name, p) for p in numbers])
    kept = 0
    for (topic, partition), error in outcomes.items():
        if error is None:
            offset = committed.get((topic, partition))
            click.echo(f"{name} {topic}-{partition}: " + (
                "no committed offset" if offset is None else f"deleted (was {offset})"))
        else:
            kept += 1
            click.echo(f"{name} {topic}-{partition}: kept: {type(error).__name__}: {error}",
                       err=True)
    if kept:
        sys.exit(1)
