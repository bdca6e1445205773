"""A bounded job queue that keeps each client's jobs in order across several threads.

Used by the router's admin bridge (admin_bridge.py): its admin threads answer
different clients' requests at the same time, so that a describe waiting seconds
for a dead shard holds up no other client's request, while each client's own
requests are answered one after another, in the order it sent them, as Kafka
answers a connection's requests (a create, then a describe of the new topic,
sent without waiting, must find the topic made).

    put_nowait(client_id, job)   the loop thread; False when ``jobs_max`` jobs wait
    take()                       a worker: the oldest job of a client none serves,
                                 blocking until there is one; None once closed
    done(client_id)              the worker, after that job: the client's next may go
    close()                      the owner: every take() returns None from now on

A job taken and not yet done does not count against ``jobs_max``. Clients are
served oldest waiting first, so a client with many jobs queued does not starve
one with a single job. Thread-safe: one lock and one condition.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Generic, TypeVar

Job = TypeVar("Job")


class ClientOrderedJobs(Generic[Job]):
    def __init__(self, jobs_max: int):
        if jobs_max < 1:
            raise AssertionError(f"jobs_max {jobs_max} must be at least 1")
        self._jobs_max = jobs_max
        self._queued_count = 0
        # Each waiting client's jobs, oldest first; clients in the order their oldest
        # waiting job arrived (a client moves to the end once one of its jobs is taken).
        self._waiting: OrderedDict[bytes, deque[Job]] = OrderedDict()
        self._serving: set[bytes] = set()
        self._closed = False
        self._changed = threading.Condition(threading.Lock())

    def put_nowait(self, client_id: bytes, job: Job) -> bool:
        """Queue ``job`` after ``client_id``'s earlier ones; False, never blocking, if
        ``jobs_max`` jobs already wait (or the queue is closed)."""
        with self._changed:
            if self._closed or self._queued_count >= self._jobs_max:
                return False
            self._waiting.setdefault(client_id, deque()).append(job)
            self._queued_count += 1
            if client_id not in self._serving:
                self._changed.notify()
            return True

    def take(self) -> tuple[bytes, Job] | None:
        """The oldest job of the first waiting client no other thread serves, marked as
        served until ``done``; blocks until there is one. None once ``close``d."""
        with self._changed:
            while True:
                if self._closed:
                    return None
                client_id = next((c for c in self._waiting if c not in self._serving), None)
                if client_id is not None:
                    return client_id, self._take_from(client_id)
                self._changed.wait()

    def done(self, client_id: bytes) -> None:
        """The job ``take`` gave for ``client_id`` is answered: its next may be taken."""
        with self._changed:
            if client_id not in self._serving:
                raise AssertionError(f"done({client_id!r}) without a job taken for it")
            self._serving.discard(client_id)
            if client_id in self._waiting:
                self._changed.notify()

    def close(self) -> None:
        """Wake every thread in ``take``: each gets None, now and later."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def queued_count(self) -> int:
        """Jobs waiting to be taken (for tests and stats)."""
        with self._changed:
            return self._queued_count

    def _take_from(self, client_id: bytes) -> Job:
        jobs = self._waiting.pop(client_id)
        job = jobs.popleft()
        if jobs:
            self._waiting[client_id] = jobs   # to the end: the other clients go first
        self._queued_count -= 1
        self._serving.add(client_id)
        return job
