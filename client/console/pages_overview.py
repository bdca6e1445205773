"""The overview page: nodes, shards, routers, partitions offline and
under-replicated, and live charts of records/s and MB/s in and out.

Page handlers run in a pool thread; the SSE stream (``/overview/stream``) runs
on the event loop and subscribes to the Sampler (sampler.py) while it is open,
pushing three events after each sample: ``summary`` (the figures), ``tables``
(shards, nodes and routers) and ``charts`` (the SVG charts), each a fragment of
HTML the page swaps in (static/console.js).
"""

from __future__ import annotations

from starlette.responses import StreamingResponse
from starlette.routing import Route

from plinth import limits
from plinth.client.console.charts import Series, line_chart
from plinth.client.console.context import human_bytes, human_rate
from plinth.errors import PlinthError


def charts_html(sampler) -> str:
    samples = list(sampler.samples)
    window_s = sampler.interval_s * sampler.samples.maxlen
    records = [Series("in", "in", [(s.time_s, s.records_in_per_s) for s in samples]),
               Series("out", "out", [(s.time_s, s.records_out_per_s) for s in samples
                                     if s.records_out_per_s is not None])]
    mbytes = [Series("in", "in", [(s.time_s, s.bytes_in_per_s / 1e6) for s in samples]),
              Series("out", "out", [(s.time_s, s.bytes_out_per_s / 1e6) for s in samples
                                    if s.bytes_out_per_s is not None])]
    return ('<div class="chart-box"><h3>records/s</h3>'
            + line_chart("records per second", records, human_rate, window_s)
            + '</div><div class="chart-box"><h3>MB/s</h3>'
            + line_chart("megabytes per second", mbytes, lambda v: f"{v:.2f}", window_s)
            + "</div>")


def summary_context(status) -> dict:
    if status is None:
        return {"status": None}
    shards = status.shards
    return {"status": status,
            "nodes_alive": sum(1 for n in status.nodes if n[2]),
            "shards_alive": sum(1 for s in shards if s.alive),
            "size_bytes": sum(s.size_bytes for s in shards),
            "remote_bytes": sum(s.remote_bytes for s in shards),
            "records_in": sum(s.records_per_s for s in shards if s.alive),
            "bytes_in": sum(s.bytes_per_s for s in shards if s.alive)}


def overview(request):
    """The page still renders when the broker's status cannot be read, and says why it
    has no figures; its status code says so too (503 for a broker that does not
    answer, as every other page's), so that a health check or a script is not told
    200 by a page about a broker that is down."""
    from plinth.client.console.app import status_for

    ctx = request.app.state.console
    status, error, status_code = None, "", 200
    try:
        status = ctx.admin.status()
    except PlinthError as exc:
        error, status_code = f"{type(exc).__name__}: {exc}", status_for(exc)
    return ctx.render(request, "overview.html", status_code=status_code, error=error,
                      charts=charts_html(ctx.sampler), **summary_context(status))


def sse_event(name: str, html: str) -> str:
    """One server-sent event named ``name`` whose data is ``html`` (one data line per line)."""
    data = "\n".join(f"data: {line}" for line in html.splitlines() or [""])
    return f"event: {name}\n{data}\n\n"


class EventStream(StreamingResponse):
    """A text/event-stream response that closes its generator when the response ends,
    however it ends. Starlette (and the server) cancel a stream whose browser left
    without closing the generator, whose ``finally`` (unsubscribing, counting the
    stream closed) would then wait for the garbage collector: a group's lag could go
    on being sampled for a page nobody has open."""

    def __init__(self, events):
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


async def stream(request):
    """SSE: a summary and the charts after every sample, while the browser listens."""
    ctx = request.app.state.console
    sampler = ctx.sampler
    sampler.subscribe()   # ValueError past CONSOLE_SSE_CLIENTS_MAX: the 400 page

    async def events():
        seen = -1
        try:
            yield f"retry: {int(limits.CONSOLE_SAMPLE_INTERVAL_S * 1000)}\n\n"
            while True:
                polls = await sampler.wait_for_change(seen, limits.CONSOLE_SSE_KEEPALIVE_S)
                if polls == seen:
                    yield ": keepalive\n\n"
                    continue
                seen = polls
                figures = summary_context(sampler.status)
                for name in ("summary", "tables"):
                    html = ctx.templates.get_template(f"overview_{name}.html").render(
                        error=sampler.error, **figures)
                    yield sse_event(name, html)
                yield sse_event("charts", charts_html(sampler))
        finally:
            sampler.unsubscribe()

    return EventStream(events())


ROUTES = [Route("/", overview, name="overview"),
          Route("/overview/stream", stream, name="overview_stream")]

__all__ = ["ROUTES", "human_bytes"]
