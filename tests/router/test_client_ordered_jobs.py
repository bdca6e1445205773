"""router/client_ordered_jobs.py: each client's jobs in order, clients at once, bounded."""

from __future__ import annotations

import threading

import pytest

from plinth.router.client_ordered_jobs import ClientOrderedJobs
from tests.router.fakes import WAIT_S


def test_a_clients_jobs_are_taken_one_at_a_time_in_the_order_it_queued_them():
    jobs = ClientOrderedJobs(10)
    for job in ("a1", "a2"):
        assert jobs.put_nowait(b"a", job)
    assert jobs.take() == (b"a", "a1")
    # While a1 is served, a2 waits: only another client's job could be taken
    assert jobs.put_nowait(b"b", "b1")
    assert jobs.take() == (b"b", "b1")
    jobs.done(b"a")
    assert jobs.take() == (b"a", "a2")


def test_clients_take_turns_so_one_with_many_jobs_does_not_hold_back_another():
    jobs = ClientOrderedJobs(10)
    for job in ("a1", "a2", "a3"):
        jobs.put_nowait(b"a", job)
    jobs.put_nowait(b"b", "b1")
    assert jobs.take() == (b"a", "a1")
    jobs.done(b"a")
    # b's one job waited longer than a's second, so it goes first
    assert jobs.take() == (b"b", "b1")
    assert jobs.take() == (b"a", "a2")


def test_a_full_queue_refuses_a_job_without_blocking_and_a_taken_job_frees_its_place():
    jobs = ClientOrderedJobs(2)
    assert [jobs.put_nowait(b"a", n) for n in (1, 2, 3)] == [True, True, False]
    assert jobs.queued_count() == 2
    assert jobs.take() == (b"a", 1)
    assert jobs.put_nowait(b"b", 4)
    assert jobs.queued_count() == 2


def test_a_thread_waiting_to_take_gets_a_job_queued_later():
    jobs = ClientOrderedJobs(2)
    taken = []
    thread = threading.Thread(target=lambda: taken.append(jobs.take()))
    thread.start()
    jobs.put_nowait(b"a", "late")
    thread.join(WAIT_S)
    assert taken == [(b"a", "late")]


def test_a_thread_waiting_for_a_busy_clients_next_job_gets_it_when_the_first_is_done():
    jobs = ClientOrderedJobs(4)
    jobs.put_nowait(b"a", 1)
    jobs.put_nowait(b"a", 2)
    assert jobs.take() == (b"a", 1)
    taken = []
    thread = threading.Thread(target=lambda: taken.append(jobs.take()))
    thread.start()
    jobs.done(b"a")
    thread.join(WAIT_S)
    assert taken == [(b"a", 2)]


def test_close_wakes_every_waiting_thread_with_none_and_refuses_new_jobs():
    jobs = ClientOrderedJobs(2)
    taken = []
    threads = [threading.Thread(target=lambda: taken.append(jobs.take())) for _ in range(3)]
    for thread in threads:
        thread.start()
    jobs.close()
    for thread in threads:
        thread.join(WAIT_S)
    assert taken == [None, None, None]
    assert jobs.put_nowait(b"a", 1) is False
    assert jobs.take() is None


def test_done_for_a_client_with_no_job_taken_is_a_programmer_error():
    jobs = ClientOrderedJobs(2)
    jobs.put_nowait(b"a", 1)
    with pytest.raises(AssertionError, match="without a job taken"):
        jobs.done(b"a")


def test_a_queue_without_room_for_one_job_is_a_programmer_error():
    with pytest.raises(AssertionError, match="jobs_max 0"):
        ClientOrderedJobs(0)
