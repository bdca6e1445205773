"""The consumer-group pages: ``/groups`` (a paged prefix search, with state and members
of the groups on the page), ``/groups/{group}`` (members, assignment, committed
offset, end offset and lag per partition, and a lag chart), ``/groups/{group}/stream``
(the page's live updates over server-sent events: while it is open, its group's lag
is sampled every CONSOLE_LAG_POLL_S (lag_watch.py) and the chart, the tiles and the
tables are sent again; a group no page streams is never sampled), and
``/groups/{group}/reset`` (GET: the form and the dry run; POST: apply the plan the
dry run showed), and ``/groups/{group}/delete`` (GET: the confirmation, the name to
type; POST: delete its committed offsets).

Starlette endpoints in the console's process; the sync ones run in its thread
pool, the stream on its event loop. The logic is in group_offsets.py. Templates:
groups/list.html, groups/detail.html (with groups/tiles.html, groups/lag_chart.html
and groups/tables.html, which the stream sends too), groups/reset.html,
groups/reset_done.html. A reset needs admin rights (``can_admin``) and the dry run's
token (confirm_tokens.py), which binds the exact (topic, partition, offset) list the
dry run showed: an apply of any other list, or of one naming a partition twice, is
refused. The coordinator itself refuses it while the group has members
(GroupNotEmptyError, the CLI's words).
"""

from __future__ import annotations

import threading
from html import escape
from urllib.parse import parse_qs, quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse
from starlette.routing import Route

from plinth import limits
from plinth.client.console import group_offsets
from plinth.client.console.lag_watch import LagWatcher, wait_for_sample
from plinth.client.console.pages_overview import EventStream, sse_event
from plinth.errors import InputTooLongError, NotAuthorizedError, TooManyGroupsWatchedError

# An apply form: the plan (a topic name, a partition and an offset per partition, at
# most CONSOLE_RESET_PARTITIONS_MAX of them) and a token, percent-encoded.
_APPLY_FORM_BYTES_MAX = limits.CONSOLE_RESET_PARTITIONS_MAX * (limits.TOPIC_NAME_BYTES_MAX + 40)
_HISTORY_LOCK = threading.Lock()


def groups_list(request):
    """A page of group names (prefix search), each with its state and member count."""
    ctx = request.app.state.console
    prefix = request.query_params.get("q", "").strip()
    after = request.query_params.get("after", "")
    page = group_offsets.groups_page(ctx.admin, prefix, after, limits.CONSOLE_LIST_PAGE_DEFAULT)
    next_url = None
    if page.more and page.names:
        next_url = "/groups?" + urlencode({"q": prefix, "after": page.names[-1]})
    return ctx.render(request, "groups/list.html", prefix=prefix,
                      groups=group_offsets.summarize(ctx.admin, page.names), next_url=next_url,
                      unanswered=page.unanswered)


def group_page(request):
    ctx = request.app.state.console
    group = request.path_params["group"]
    detail = group_offsets.group_detail(ctx.admin, group)
    history = lag_history(request)
    now_s = history.now_s()
    # A sample for the chart drawn now, unless the group's stream took one within
    # half an interval (another browser watches it): no doubled look.
    samples = history.fresh(group, now_s, limits.CONSOLE_LAG_POLL_S / 2)
    if samples is None:
        samples = history.add(group, now_s, detail.total_lag)
    return ctx.render(request, "groups/detail.html", group=group, detail=detail,
                      chart=group_offsets.chart_geometry(samples), group_url=group_url(group),
                      can_admin=ctx.can_admin,
                      topics=sorted(group_offsets.group_topics(detail.info)))


async def group_stream(request):
    """SSE, while a group's page is open: after each sample of its lag (lag_watch.py,
    every CONSOLE_LAG_POLL_S) the events ``group-state``, ``group-tiles``, ``lag-chart``
    and ``group-tables``, each the HTML of the page's element of that id (only
    ``lag-chart``, with the error, when the sample failed); a keepalive comment when
    no sample came for CONSOLE_SSE_KEEPALIVE_S. An unknown group is a 404 and a broker
    that does not answer a 503, before the stream starts. Past CONSOLE_SSE_CLIENTS_MAX streams
    or CONSOLE_LAG_GROUPS_MAX watched groups, one ``refused`` event saying so, and
    the stream ends (a 200: a browser's EventSource reads no other status's body)."""
    ctx = request.app.state.console
    group = request.path_params["group"]
    if len(group.encode()) > limits.GROUP_NAME_BYTES_MAX:
        raise InputTooLongError(f"the group name is {len(group.encode())} bytes; at most "
                                f"{limits.GROUP_NAME_BYTES_MAX}")
    # Asked once before the stream starts, so that an unknown group is a 404 and a
    # broker that does not answer a 503, as the group's page is: a 200 stream would
    # only carry the error in its lag chart.
    await run_in_threadpool(ctx.admin.describe_group, group)
    watcher = lag_watcher(request)
    return EventStream(_group_events(ctx, watcher, group))


async def _group_events(ctx, watcher: LagWatcher, group: str):
    # Subscribed inside the generator: its finally then always undoes it, whenever
    # the browser leaves.
    try:
        ctx.streams_open(+1)
    except ValueError as exc:
        yield sse_event("refused", _refusal(exc))
        return
    try:
        watch = watcher.subscribe(group)
    except TooManyGroupsWatchedError as exc:
        ctx.streams_open(-1)
        yield sse_event("refused", _refusal(exc))
        return
    try:
        yield f"retry: {int(watcher.interval_s * 1000)}\n\n"
        seen = 0
        while True:
            polls = await wait_for_sample(watch, seen, limits.CONSOLE_SSE_KEEPALIVE_S)
            if polls == seen:
                yield ": keepalive\n\n"
                continue
            seen = polls
            for name, html in _live_fragments(ctx, group, watch, watcher.history):
                yield sse_event(name, html)
    finally:
        watcher.unsubscribe(group)
        ctx.streams_open(-1)


def _refusal(exc: Exception) -> str:
    return (f'<p class="error message" id="live-refused">Live updates are off: '
            f'{escape(str(exc))}. Reload the page to try again.</p>')


def _live_fragments(ctx, group: str, watch, history) -> list[tuple[str, str]]:
    """(event name, HTML) for each live element of the group page, from the watch's
    last sample."""
    template = ctx.templates.get_template
    chart = template("groups/lag_chart.html").render(
        chart=group_offsets.chart_geometry(history.samples(group)), error=watch.error)
    if watch.error or watch.detail is None:
        return [("lag-chart", chart)]
    detail = watch.detail
    return [("group-state", escape(detail.state)),
            ("group-tiles", template("groups/tiles.html").render(detail=detail)),
            ("lag-chart", chart),
            ("group-tables", template("groups/tables.html").render(detail=detail))]


def reset_dry_run(request):
    """The reset form; with ``to`` in the query string, the plan it would apply."""
    ctx = request.app.state.console
    group = request.path_params["group"]
    _check_admin(ctx, group)
    info = ctx.admin.describe_group(group)
    plan = None
    if request.query_params.get("to"):
        topic, target, value = group_offsets.parse_reset(request.query_params)
        plan = group_offsets.plan_reset(ctx.admin, group, topic, target, value)
    return ctx.render(
        request, "groups/reset.html", group=group, group_url=group_url(group), plan=plan,
        members=len(info.members), topics=sorted(group_offsets.group_topics(info)),
        form=dict(request.query_params), targets=group_offsets.RESET_TARGETS,
        plan_text=group_offsets.format_plan(plan.offsets) if plan else "",
        token=ctx.confirm_token(request, "reset-offsets", group,
                                group_offsets.plan_triples(plan.offsets)) if plan else "")


async def reset_apply(request):
    """Apply the plan the dry run showed (the form carries it), then show the offsets."""
    ctx = request.app.state.console
    group = request.path_params["group"]
    form = await _bounded_form(request, _APPLY_FORM_BYTES_MAX)
    return await run_in_threadpool(_apply, request, ctx, group, form)


def _apply(request, ctx, group: str, form: dict[str, str]):
    _check_admin(ctx, group)
    offsets = group_offsets.parse_plan(form.get("plan", ""))
    ctx.check_confirmation(request, "reset-offsets", group,
                           group_offsets.plan_triples(offsets), form)
    group_offsets.apply_plan(ctx.admin, group, offsets)
    committed = ctx.admin.describe_group(group).committed
    rows = [(t, p, new, committed.get((t, p))) for (t, p), new in sorted(offsets.items())]
    return ctx.render(request, "groups/reset_done.html", group=group,
                      group_url=group_url(group), rows=rows)


def delete_confirm(request):
    """The delete confirmation: what goes, and the group's name to type."""
    ctx = request.app.state.console
    group = request.path_params["group"]
    _check_admin(ctx, group, "deleting")
    info = ctx.admin.describe_group(group)
    return ctx.render(request, "groups/delete.html", group=group, group_url=group_url(group),
                      members=len(info.members), partitions=len(info.committed),
                      token=ctx.confirm_token(request, "delete-group", group, None))


async def delete_apply(request):
    """Delete the group (the coordinator refuses while it has members); to the list."""
    ctx = request.app.state.console
    group = request.path_params["group"]
    form = await _bounded_form(request, limits.CONSOLE_FORM_CHARS_MAX)
    _check_admin(ctx, group, "deleting")
    ctx.check_confirmation(request, "delete-group", group, None, form)
    if form.get("confirm_name") != group:
        raise ValueError(f"type the group's name ({group}) to delete it")
    await run_in_threadpool(ctx.admin.delete_group, group)
    return RedirectResponse("/groups", status_code=303)


def _check_admin(ctx, group: str, doing: str = "resetting the offsets of") -> None:
    if not ctx.can_admin:
        raise NotAuthorizedError(f"{doing} group {group!r} needs admin rights, which the "
                                 f"console's key does not have")


async def _bounded_form(request, bytes_max: int) -> dict[str, str]:
    """The url-encoded form of a POST, read up to ``bytes_max`` bytes (InputTooLongError
    past them): the first value of each field."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > bytes_max:
            raise InputTooLongError(f"the form is over {bytes_max} bytes")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True,
                      max_num_fields=8)
    return {name: values[0] for name, values in fields.items()}


def lag_history(request) -> group_offsets.LagHistory:
    """The app's lag samples (one LagHistory per app, made on first use)."""
    state = request.app.state
    with _HISTORY_LOCK:
        history = getattr(state, "group_lag_history", None)
        if history is None:
            history = state.group_lag_history = group_offsets.LagHistory()
    return history


def lag_watcher(request) -> LagWatcher:
    """The app's LagWatcher, over its LagHistory (made on first use, on the event loop)."""
    state = request.app.state
    watcher = getattr(state, "group_lag_watcher", None)
    if watcher is None:
        watcher = state.group_lag_watcher = LagWatcher(state.console.admin.background(),
                                                        lag_history(request))
    return watcher


def group_url(group: str) -> str:
    return f"/groups/{quote(group, safe='')}"


ROUTES = [
    Route("/groups", groups_list, name="groups_list"),
    Route("/groups/{group}", group_page, name="group"),
    Route("/groups/{group}/stream", group_stream, name="group_stream"),
    Route("/groups/{group}/reset", reset_dry_run, methods=["GET"], name="group_reset"),
    Route("/groups/{group}/reset", reset_apply, methods=["POST"], name="group_reset_apply"),
    Route("/groups/{group}/delete", delete_confirm, methods=["GET"], name="group_delete"),
    Route("/groups/{group}/delete", delete_apply, methods=["POST"], name="group_delete_apply"),
]
