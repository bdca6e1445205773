"""The event loop an asyncio client belongs to, and the error for a call from another.

Client side. Each asyncio client (AIOProducer, AIOConsumer: at ``start()``;
AIOAdmin: at its first call) remembers the running loop, and each of its public
coroutines compares the running loop with it once, before anything else: one
``get_running_loop() is loop`` per call (AIOProducer.send and send_and_wait, once
per record, compare the thread running the loop with this one instead:
``on_loop_thread``). The client's tasks (the
producer's sender, a group member's heartbeat), futures and locks belong to that
loop. Awaited on another (a second ``asyncio.run``), a send would sit in a buffer
that no task drains and a group member would go on reading partitions after its
heartbeats stopped; the call raises WrongEventLoopError at once instead, as
aiokafka's clients are bound to their loop.

``stop()``/``close()`` on another loop releases what it can before raising:
only when no task of the client's own loop can run any more (that loop is closed
or not running), since a loop running in another thread still uses the sockets.
"""

from __future__ import annotations

from asyncio import AbstractEventLoop, BaseEventLoop, get_running_loop
from threading import get_ident

from plinth.errors import WrongEventLoopError


def wrong_loop_error(client: str, call: str | None, loop: AbstractEventLoop, outcome: str = "",
                     bound_at: str = "started on") -> WrongEventLoopError:
    """The error for ``client.call()`` (None: a call not named) awaited on a loop other
    than ``loop``, the client's own; ``outcome``: what the call did anyway (a stop()
    closes sockets). Any thread."""
    if loop.is_closed():
        state = "which is closed"
    elif loop.is_running():
        state = "which is running in another thread"
    else:
        state = "which is not running"
    what = f"{client}.{call}()" if call else f"A call of an {client}"
    return WrongEventLoopError(
        f"{what} was awaited on an event loop other than the one this {client} was "
        f"{bound_at}, {state}: an asyncio client belongs to that loop (its tasks and "
        f"futures run there); create the {client} inside the loop that uses it (in the "
        f"coroutine that asyncio.run runs)" + (f". {outcome}" if outcome else ""))


def check_loop(loop: AbstractEventLoop, client: str, call: str) -> None:
    """WrongEventLoopError unless the running loop is ``loop``. A task of the running
    loop, at the top of ``client.call()``."""
    if get_running_loop() is not loop:
        raise wrong_loop_error(client, call, loop)


def on_loop_thread(loop: AbstractEventLoop) -> bool:
    """Whether ``loop`` is the running loop of the calling thread: ``get_running_loop()
    is loop``, cheaper. Any thread.

    asyncio's loops (BaseEventLoop) keep the id of the thread running them in
    ``_thread_id`` (None while not running), which asyncio's own debug checks read;
    one loop runs per thread, so the same id means the same loop. On Python 3.11
    get_running_loop() makes a getpid() call, +10 % per record sent and awaited.
    Not ``loop.is_running()``, which the producer asked before: a loop running in
    another thread passed it, the record went into the accumulator from this thread
    (whose structures are the loop's alone) and the call never returned. Another
    loop class (uvloop) is asked get_running_loop()."""
    if isinstance(loop, BaseEventLoop):
        return loop._thread_id == get_ident()
    return get_running_loop() is loop


def refuse_release_while_running(loop: AbstractEventLoop, client: str, call: str) -> None:
    """WrongEventLoopError, releasing nothing, while ``loop`` runs (in another thread):
    its tasks still use the client's sockets and futures, which are not thread-safe.
    A stop()/close() on another loop, before it releases anything."""
    if loop.is_running():
        raise wrong_loop_error(
            client, call, loop,
            f"Nothing was released: await {call}() on that loop (from this thread: "
            f"asyncio.run_coroutine_threadsafe(client.{call}(), loop))")
