"""The message browser's pages: ``/browse`` (pick a topic), ``/browse/{topic}`` (records
from an offset, a time, the newest or the oldest, filtered, with "scan more") and
``/record/{topic}/{partition}/{offset}`` (one record, its permalink).

Starlette endpoints, run in its thread pool (sync functions), in the console's
process. Each request opens its own Consumer (browse.open_consumer) and closes it
before it answers. What a user got wrong (a bad offset, time, topic name or an
oversized filter) is raised as a plinth error or ValueError with the reason; the
console's app renders those as an error page (400, or 404 for an unknown topic).
A partition whose fetches failed is named on the page with the fetch's error (a 503
when nothing could be read), and a record that could not be read is a 503 page with
that error, never "no records" or a 404.
The logic is in browse.py; this module only reads the request and fills templates:
browse/index.html, browse/topic.html, browse/record.html.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from starlette.routing import Route

from plinth import limits
from plinth.client.console import browse
from plinth.client.console.browse import BrowseQuery, BrowseResult


def browse_index(request):
    """The topic picker: a prefix search over topic names, paged."""
    ctx = request.app.state.console
    prefix = request.query_params.get("q", "").strip()
    after = request.query_params.get("after", "")
    page = browse.topics_page(ctx.admin, prefix, after, limits.CONSOLE_LIST_PAGE_DEFAULT)
    next_url = None
    if page.more and page.names:
        next_url = "/browse?" + urlencode({"q": prefix, "after": page.names[-1]})
    return ctx.render(request, "browse/index.html", prefix=prefix, names=page.names,
                      next_url=next_url)


def browse_topic(request):
    """Records of one topic as the query string asks (browse.parse_browse_query)."""
    ctx = request.app.state.console
    query = browse.parse_browse_query(request.path_params["topic"], request.query_params)
    # The Consumer is work in flight on the broker too: it takes a slot.
    with ctx.calls.slot(), browse.open_consumer(ctx.broker) as consumer:
        result = browse.browse(ctx.admin, consumer, query)
    # Nothing read because the fetches failed (object storage down, a shard restarting)
    # is a 503 that names them, not a 200 saying "no records".
    return ctx.render(request, "browse/topic.html", status_code=503 if result.unreadable else 200,
                      query=query, result=result,
                      form=_form_values(request.query_params), rows=_rows(result),
                      more_url=_more_url(result), views=browse.VIEWS,
                      starts=browse.START_MODES, limits=limits)


def record_page(request):
    """One record, by topic, partition and offset: its key, value, headers and time."""
    ctx = request.app.state.console
    topic = request.path_params["topic"]
    partition = browse.parse_int("partition", request.path_params["partition"], 0,
                                 limits.CONSOLE_BROWSE_POSITIONS_MAX)
    offset = browse.parse_int("offset", request.path_params["offset"], 0, browse.OFFSET_MAX)
    view = browse.choice_param(request.query_params, "view", browse.VIEWS, "text")
    # The Consumer is work in flight on the broker too: it takes a slot.
    with ctx.calls.slot(), browse.open_consumer(ctx.broker) as consumer:
        record = browse.read_record(ctx.admin, consumer, topic, partition, offset)
    return ctx.render(request, "browse/record.html", record=record, view=view,
                      views=browse.VIEWS,
                      row=_row(record, view, limits.CONSOLE_RECORD_SHOWN_BYTES_MAX),
                      shown_bytes_max=limits.CONSOLE_RECORD_SHOWN_BYTES_MAX)


def _form_values(params) -> dict[str, str]:
    """What the form shows again: the values the request came with."""
    names = ("partition", "start", "offset", "timestamp", "key", "value", "limit", "scan", "view")
    return {name: params.get(name, "") for name in names}


def _rows(result: BrowseResult) -> list[dict]:
    return [_row(record, result.query.view, limits.CONSOLE_PREVIEW_BYTES)
            for record in result.records]


def _row(record, view: str, shown_bytes_max: int) -> dict:
    return {
        "partition": record.partition, "offset": record.offset,
        "timestamp_ms": record.timestamp_ms, "time": browse.iso_time(record.timestamp_ms),
        "key": browse.show(record.key, "hex" if view == "hex" else "text", shown_bytes_max),
        "value": browse.show(record.value, view, shown_bytes_max),
        "headers": [(name, browse.show(value, "hex" if view == "hex" else "text",
                                       shown_bytes_max))
                    for name, value in (record.headers or ())],
        "permalink": record_url(record.topic, record.partition, record.offset, view),
    }


def record_url(topic: str, partition: int, offset: int, view: str = "text") -> str:
    url = f"/record/{quote(topic, safe='')}/{partition}/{offset}"
    return url if view == "text" else f"{url}?view={view}"


def _query_params(query: BrowseQuery) -> dict[str, str]:
    """The query string that asks ``query`` again (filters, page and view)."""
    params = {"partition": "all" if query.partition is None else str(query.partition),
              "start": query.start, "limit": str(query.limit), "scan": str(query.scan_max),
              "view": query.view}
    if query.offset is not None:
        params["offset"] = str(query.offset)
    if query.timestamp_ms is not None:
        params["timestamp"] = str(query.timestamp_ms)
    if query.key_filter:
        params["key"] = query.key_filter.decode()
    if query.value_filter:
        params["value"] = query.value_filter.decode()
    return params


def _more_url(result: BrowseResult) -> str | None:
    """The "scan more" link: the same query, continuing from where this one stopped."""
    if not result.more:
        return None
    params = _query_params(result.query)
    params["at"] = browse.format_positions(result.positions)
    return f"/browse/{quote(result.query.topic, safe='')}?{urlencode(params)}"


ROUTES = [
    Route("/browse", browse_index, name="browse_index"),
    Route("/browse/{topic}", browse_topic, name="browse_topic"),
    Route("/record/{topic}/{partition}/{offset}", record_page, name="browse_record"),
]
