"""AIORecordFuture: the sync record future made awaitable, on a real AIOBatchResult.

The batch results here are resolved by the test, as the sender task resolves
them; every assertion is about what asyncio sees of the record futures.
"""

from __future__ import annotations

import asyncio

import pytest

from plinth.client.aio.futures import AIOBatchResult, AIORecordFuture
from plinth.client.futures import BatchResult, Piece, RecordMetadata
from plinth.errors import NotLeaderError, RecordTooLargeError


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 10))


def test_a_record_future_is_an_asyncio_future_that_awaits_to_its_records_metadata():
    async def scenario():
        batch = AIOBatchResult("t", 1)
        futures = [AIORecordFuture(batch, i) for i in range(3)]
        assert all(asyncio.isfuture(f) and not f.done() for f in futures)
        asyncio.get_running_loop().call_soon(batch.resolve, 40)
        return [await f for f in futures]

    assert run(scenario()) == [RecordMetadata("t", 1, 40 + i) for i in range(3)]


def test_gather_and_wait_take_record_futures_and_get_every_result():
    async def scenario():
        batch = AIOBatchResult("t", 0)
        futures = [AIORecordFuture(batch, i) for i in range(5)]
        asyncio.get_running_loop().call_soon(batch.resolve, 0)
        gathered = await asyncio.gather(*futures)
        done, pending = await asyncio.wait(futures, timeout=5)
        return gathered, len(done), len(pending)

    gathered, done, pending = run(scenario())
    assert [m.offset for m in gathered] == [0, 1, 2, 3, 4] and (done, pending) == (5, 0)


def test_a_failed_batch_raises_its_error_from_every_record_future():
    async def scenario():
        batch = AIOBatchResult("t", 0)
        future = AIORecordFuture(batch, 0)
        batch.resolve(None, NotLeaderError("moved"))
        assert isinstance(future.exception(), NotLeaderError)
        with pytest.raises(NotLeaderError, match="moved"):
            await future
        with pytest.raises(NotLeaderError):
            await asyncio.gather(future)

    run(scenario())


def test_a_split_batchs_record_futures_await_to_their_own_pieces_offset_or_error():
    async def scenario():
        # Given a batch split in two pieces, the first stored at 10, the second refused
        batch = AIOBatchResult("t", 0)
        futures = [AIORecordFuture(batch, i) for i in range(3)]
        first, second, error = BatchResult("t", 0), BatchResult("t", 0), RecordTooLargeError("big")
        first.resolve(10)
        second.resolve(None, error)
        # When the batch resolves with its pieces
        asyncio.get_running_loop().call_soon(
            batch.resolve_split, [Piece(0, 2, first), Piece(2, 1, second)])
        # Then each record's future has its own piece's outcome
        return await asyncio.gather(*futures, return_exceptions=True), error

    outcomes, error = run(scenario())
    assert outcomes == [RecordMetadata("t", 0, 10), RecordMetadata("t", 0, 11), error]


def test_result_before_the_acknowledgement_raises_invalid_state_and_never_blocks_the_loop():
    async def scenario():
        future = AIORecordFuture(AIOBatchResult("t", 0), 0)
        with pytest.raises(asyncio.InvalidStateError):
            future.result()
        with pytest.raises(asyncio.InvalidStateError):
            future.get(10)   # the sync future's get would wait on the loop's own thread
        assert future.cancel() is False and not future.cancelled()

    run(scenario())


def test_done_callbacks_run_on_the_loop_with_the_record_future_and_can_be_removed():
    async def scenario():
        batch = AIOBatchResult("t", 0)
        first, second = AIORecordFuture(batch, 0), AIORecordFuture(batch, 1)
        seen = []
        first.add_done_callback(seen.append)
        second.add_done_callback(seen.append)
        assert first.remove_done_callback(seen.append) == 1
        batch.resolve(7)
        assert seen == []   # scheduled with call_soon, as asyncio's futures do
        await asyncio.sleep(0)
        return seen

    seen = run(scenario())
    assert len(seen) == 1 and seen[0].result() == RecordMetadata("t", 0, 8)


def test_a_done_callback_that_raises_goes_to_the_loops_handler_and_the_others_still_run():
    async def scenario():
        loop = asyncio.get_running_loop()
        handled = []
        loop.set_exception_handler(lambda _loop, context: handled.append(context["exception"]))
        batch = AIOBatchResult("t", 0)
        records = [AIORecordFuture(batch, i) for i in range(3)]
        seen = []
        records[0].add_done_callback(lambda f: 1 / 0)
        for record in records[1:]:
            record.add_done_callback(seen.append)
        batch.resolve(0)
        await asyncio.sleep(0)
        return handled, seen, records

    handled, seen, records = run(scenario())
    assert [type(e) for e in handled] == [ZeroDivisionError] and seen == records[1:]


def test_a_task_cancelled_while_awaiting_its_record_leaves_the_other_records_of_the_batch_alone():
    async def scenario():
        loop = asyncio.get_running_loop()
        batch = AIOBatchResult("t", 0)
        first, second = AIORecordFuture(batch, 0), AIORecordFuture(batch, 1)

        async def wait_for(record):
            return await record

        impatient = loop.create_task(wait_for(first))
        patient = loop.create_task(wait_for(second))
        await asyncio.sleep(0)   # both tasks now await the batch
        impatient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await impatient
        batch.resolve(10)
        return await patient, first.result()

    assert run(scenario()) == (RecordMetadata("t", 0, 11), RecordMetadata("t", 0, 10))
