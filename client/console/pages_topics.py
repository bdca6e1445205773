"""The topic pages: the paged, searchable list; a topic's partitions and config;
and topic create, alter and delete, each behind a confirmation step.

Handlers run in a pool thread. Every change is two requests: a form posts to
``.../confirm``, which checks the input and shows what will happen with a token
(confirm_tokens.py) bound to that plan (``create_plan``, ``alter_plan``,
``delete_plan``); only a
post of that page, with that very plan, applies it. Bad input raises ValueError
or a plinth error, which app.py shows on the page.
"""

from __future__ import annotations

import collections
import threading
import time

from html import escape

from starlette.responses import RedirectResponse
from starlette.routing import Route

from plinth import limits, protocol, topics
from plinth.client.console.broker_calls import page_deadline
from plinth.client.console.topic_listing import topic_page
from plinth.client.console.pages_overview import EventStream, sse_event
from plinth.errors import (NotAuthorizedError, PlinthError, StaleConfirmationError,
                           UnknownTopicIdError)

# Each topic's end offsets at its last look, for the partitions' rates: bounded,
# the oldest forgotten first. Shared by every page thread, under its lock.
_last_ends: collections.OrderedDict[str, tuple[float, list[int]]] = collections.OrderedDict()
_last_ends_lock = threading.Lock()


def _int_arg(params, name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text in (None, ""):
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a whole number") from None
    if not low <= value <= high:
        raise ValueError(f"{name} {value} is outside {low}..{high}")
    return value


def topic_list(request):
    ctx = request.app.state.console
    params = request.query_params
    limit = _int_arg(params, "limit", limits.CONSOLE_TOPICS_PAGE_DEFAULT, 1,
                     limits.CONSOLE_TOPICS_PAGE_MAX)
    page = topic_page(ctx.admin, params.get("q", ""), params.get("after", ""), limit)
    return ctx.render(request, "topics/list.html", page=page)


def _partition_rates(name: str, ends: list[int]) -> list[float | None]:
    now = time.monotonic()
    with _last_ends_lock:
        before = _last_ends.get(name)
        if before is not None and now - before[0] < limits.CONSOLE_RATE_LOOKS_S_MIN:
            return [None] * len(ends)   # too close to the last look: keep that one
        _last_ends.pop(name, None)
        _last_ends[name] = (now, ends)
        while len(_last_ends) > limits.CONSOLE_TOPICS_PAGE_MAX:
            _last_ends.popitem(last=False)
    if before is None or len(before[1]) != len(ends):
        return [None] * len(ends)
    dt = now - before[0]
    return [max(0, end - old) / dt for end, old in zip(ends, before[1])]


def _topic_context(ctx, name: str) -> dict:
    topics.validate_topic_name(name)
    try:
        info, described = ctx.admin.describe_topic(name), True
    except NotAuthorizedError:
        info, described = _offsets_only(ctx.admin, name), False
    parts = info.partition_info
    rates = _partition_rates(name, [p.end_offset for p in parts])
    return {"topic": info, "rows": list(zip(parts, rates)), "described": described,
            "tiered": topics.remote_storage_enabled(info.config) or any(p.has_remote for p in parts)}


def _offsets_only(admin, name: str) -> protocol.TopicInfo:
    """What a key that may consume the topic but not describe it (admin) can see:
    each partition's start and end offsets; no leader, replicas or config."""
    count = admin.partition_count(name)
    parts = []
    for partition in range(count):
        offsets = admin.list_offsets(name, partition)
        parts.append(protocol.PartitionInfo(partition, shard="?",
                                            start_offset=offsets.start_offset,
                                            end_offset=offsets.end_offset))
    return protocol.TopicInfo(name, count, {}, parts)


def topic_detail(request):
    ctx = request.app.state.console
    return ctx.render(request, "topics/detail.html",
                      **_topic_context(ctx, request.path_params["name"]))


def topic_partitions(request):
    """The partition table alone (what the stream sends, for a client without SSE)."""
    ctx = request.app.state.console
    return ctx.templates.TemplateResponse(
        request, "topics/partitions.html", _topic_context(ctx, request.path_params["name"]))


async def topic_stream(request):
    """SSE: the partition table every CONSOLE_TOPIC_REFRESH_S while the topic's page is
    open, with each partition's records/s from the change of its end offset. It
    asks the broker only for this topic, and only while the browser listens."""
    import anyio.to_thread

    ctx = request.app.state.console
    name = request.path_params["name"]
    topics.validate_topic_name(name)
    # Asked once before the stream starts, so that an unknown topic is a 404 and a
    # broker that does not answer a 503, as the topic's page is: a 200 stream would
    # only carry the error in its events.
    await anyio.to_thread.run_sync(ctx.admin.partition_count, name)
    ctx.streams_open(+1)   # ValueError past CONSOLE_SSE_CLIENTS_MAX: the 400 page

    async def events():
        try:
            while True:
                await anyio.sleep(limits.CONSOLE_TOPIC_REFRESH_S)
                try:
                    with page_deadline():   # the request's has passed: one per refresh
                        figures = await anyio.to_thread.run_sync(_topic_context, ctx, name)
                    html = ctx.templates.get_template("topics/partitions.html").render(**figures)
                except PlinthError as exc:   # deleted meanwhile, broker away: say so, go on
                    html = (f'<p class="error message">{escape(type(exc).__name__)}: '
                            f'{escape(str(exc))}</p>')
                yield sse_event("partitions", html)
        finally:
            ctx.streams_open(-1)

    return EventStream(events())


# --- create ---------------------------------------------------------------------

def parse_config_text(text: str) -> dict[str, str]:
    """``key=value`` lines (blank lines and ``#`` comments skipped) as a dict."""
    if len(text) > limits.CONSOLE_FORM_CHARS_MAX:
        raise ValueError(f"the config is {len(text)} characters; at most "
                         f"{limits.CONSOLE_FORM_CHARS_MAX}")
    config: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"config line {number} ({line[:80]!r}) is not key=value")
        config[key.strip()] = value.strip()
        if len(config) > limits.CONSOLE_CONFIG_ENTRIES_MAX:
            raise ValueError(f"more than {limits.CONSOLE_CONFIG_ENTRIES_MAX} config entries")
    return config


def _create_args(form) -> dict:
    name = (form.get("name") or "").strip()
    topics.validate_topic_name(name)
    partitions = _int_arg(form, "partitions", 1, 1, limits.PARTITIONS_PER_TOPIC_MAX)
    factor = None
    if (form.get("replication_factor") or "").strip():
        factor = _int_arg(form, "replication_factor", 1, 1, limits.REPLICATION_FACTOR_MAX)
    return {"name": name, "partitions": partitions, "replication_factor": factor,
            "config_text": form.get("config") or "",
            "config": parse_config_text(form.get("config") or "")}


def create_plan(args: dict) -> dict:
    """What a create's token binds: everything it sets, in one canonical order."""
    return {"partitions": args["partitions"], "replication_factor": args["replication_factor"],
            "config": sorted(args["config"].items())}


def topic_new(request):
    ctx = request.app.state.console
    return ctx.render(request, "topics/new.html", form={})


async def topic_create_confirm(request):
    ctx = request.app.state.console
    args = _create_args(await request.form())
    import anyio.to_thread

    # The broker's verdict now, not after the confirming post: a reserved name, a key
    # it does not know or a value it refuses is this page's error (400).
    await anyio.to_thread.run_sync(lambda: ctx.admin.validate_new_topic(
        args["name"], args["partitions"], args["replication_factor"], args["config"]))
    return ctx.render(request, "topics/confirm.html", action="create", args=args,
                      token=ctx.confirm_token(request, "create-topic", args["name"],
                                              create_plan(args)),
                      post_to=request.url_for("topic_create"))


async def topic_create(request):
    ctx = request.app.state.console
    form = await request.form()
    args = _create_args(form)
    ctx.check_confirmation(request, "create-topic", args["name"], create_plan(args), form)
    import anyio.to_thread

    await anyio.to_thread.run_sync(lambda: ctx.admin.create_topic(
        args["name"], args["partitions"], args["replication_factor"], config=args["config"]))
    return RedirectResponse(request.url_for("topic_detail", name=args["name"]), status_code=303)


# --- alter and delete ---------------------------------------------------------

def alter_args(text: str) -> tuple[dict[str, str], list[str]]:
    """The alter form's lines as (keys to set, keys to set back to their defaults: the
    lines ``key=`` with nothing after the ``=``)."""
    config = parse_config_text(text)
    if not config:
        raise ValueError("no config entries to change: give key=value lines "
                         "(key= sets a key back to its default)")
    changes = {key: value for key, value in config.items() if value}
    return changes, sorted(key for key, value in config.items() if not value)


def alter_plan(config: dict[str, str], deleted: list[str]) -> dict:
    """What an alter's token binds: the keys set, with their values, and the keys set
    back to their defaults, each sorted."""
    return {"set": sorted(config.items()), "default": sorted(deleted)}


async def topic_alter_confirm(request):
    ctx = request.app.state.console
    name = request.path_params["name"]
    form = await request.form()
    config, deleted = alter_args(form.get("config") or "")
    import anyio.to_thread

    info = await anyio.to_thread.run_sync(ctx.admin.describe_topic, name)
    validate_alter(info, config, deleted)
    changes = sorted([(k, info.config.get(k), v) for k, v in config.items()] +
                     [(k, info.config.get(k), "(default)") for k in deleted])
    return ctx.render(request, "topics/confirm.html", action="alter", topic=info, changes=changes,
                      config_text=form.get("config"),
                      token=ctx.confirm_token(request, "alter-topic", name,
                                              alter_plan(config, deleted)),
                      post_to=request.url_for("topic_alter", name=name))


def validate_alter(info: protocol.TopicInfo, config: dict[str, str], deleted: list[str]) -> None:
    """InvalidConfigError if the broker would refuse this alter of the topic described
    as ``info``: the checks its controller makes (plinth/topics.py), as the Kafka
    listener's validate_only AlterConfigs makes them. The wire's alterTopic has no
    validate-only form; one check is the broker's alone: remote.storage.enable=true
    on a broker without --tier-url is refused only on applying."""
    factor = max(1, len(info.partition_info[0].replicas)) if info.partition_info else 1
    kept = topics.config_without(info.name, info.config, config, deleted)
    new = topics.normalize_topic_config(info.name, {**kept, **config}, factor)
    topics.check_config_change(info.name, info.config, new)


async def topic_alter(request):
    ctx = request.app.state.console
    name = request.path_params["name"]
    form = await request.form()
    config, deleted = alter_args(form.get("config") or "")
    ctx.check_confirmation(request, "alter-topic", name, alter_plan(config, deleted), form)
    import anyio.to_thread

    await anyio.to_thread.run_sync(lambda: ctx.admin.alter_topic(name, config,
                                                                 delete_config=deleted))
    return RedirectResponse(request.url_for("topic_detail", name=name), status_code=303)


def delete_plan(topic_id: str) -> dict:
    """What a delete's token binds: the id of the topic the page showed, so that a
    topic deleted and created again under its name since is not the one deleted."""
    return {"topic_id": topic_id}


def topic_delete_confirm(request):
    ctx = request.app.state.console
    name = request.path_params["name"]
    info = ctx.admin.describe_topic(name)
    return ctx.render(request, "topics/confirm.html", action="delete", topic=info,
                      token=ctx.confirm_token(request, "delete-topic", name,
                                              delete_plan(info.topic_id)),
                      post_to=request.url_for("topic_delete", name=name))


async def topic_delete(request):
    ctx = request.app.state.console
    name = request.path_params["name"]
    form = await request.form()
    topic_id = form.get("topic_id") or ""
    ctx.check_confirmation(request, "delete-topic", name, delete_plan(topic_id), form)
    if form.get("confirm_name") != name:
        raise ValueError(f"type the topic's name ({name}) to delete it")
    import anyio.to_thread

    try:
        # The broker checks the id and deletes in one step of its controller.
        await anyio.to_thread.run_sync(lambda: ctx.admin.delete_topic(
            name, topic_id=topic_id or None))
    except UnknownTopicIdError as exc:
        raise StaleConfirmationError(
            f"topic {name!r} was re-created since this confirmation was shown, so it was "
            f"not deleted ({exc}): show its delete page again to delete the new "
            f"topic") from None
    return RedirectResponse(request.url_for("topic_list"), status_code=303)


ROUTES = [
    Route("/topics", topic_list, name="topic_list"),
    Route("/topics/new", topic_new, name="topic_new"),
    Route("/topics/new/confirm", topic_create_confirm, methods=["POST"], name="topic_create_confirm"),
    Route("/topics/new", topic_create, methods=["POST"], name="topic_create"),
    Route("/topics/{name}", topic_detail, name="topic_detail"),
    Route("/topics/{name}/partitions", topic_partitions, name="topic_partitions"),
    Route("/topics/{name}/stream", topic_stream, name="topic_stream"),
    Route("/topics/{name}/alter/confirm", topic_alter_confirm, methods=["POST"],
          name="topic_alter_confirm"),
    Route("/topics/{name}/alter", topic_alter, methods=["POST"], name="topic_alter"),
    Route("/topics/{name}/delete", topic_delete_confirm, name="topic_delete_confirm"),
    Route("/topics/{name}/delete", topic_delete, methods=["POST"], name="topic_delete"),
]
