"""A bounded job queue that keeps each client's jobs in order across several threads.

Used by the router's admin bridge (admin_bridge.py): its admin threads answer
different clients' requests at the same time, so that a describe waiting seconds
for a dead shard holds up no other client's request, while each client's own
requests are answered one after another, in the order it sent them, as Kafka
answers a connection's requests (a create, then a describe of the new topic,
sent without waiting, must find the topic made).

Lanes. Each job is queued in a lane, and each thread takes from one lane only:
the bridge's change threads take changes, its query threads the rest, so that
changes waiting for the controller's one change thread never hold the threads
queries need. A client's order holds across lanes: its next job, whatever its
lane, is taken only after its previous one is done (a describe sent after a
create waits for the create, on the change thread, however many query threads
are free). A lane may have a bound of its own below the queue's.

    put_nowait(client_id, job, lane)  the loop thread; False when ``jobs_max`` jobs,
                                      or the lane's max, wait
    take(lane)                        a worker: the oldest job in ``lane`` of a
                                      client none serves whose next job it is,
                                      blocking until there is one; None once closed
    done(client_id)                   the worker, after that job: the client's next may go
    close()                           the owner: every take() returns None from now on

A job taken and not yet done does not count against the bounds. Clients are
served oldest waiting first, so a client with many jobs queued does not starve
one with a single job. Thread-safe: one lock, one condition per lane.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Generic, TypeVar

Job = TypeVar("Job")

# The lane of a job queued without one (and the only lane of a queue made without any).
DEFAULT_LANE = "default"


class ClientOrderedJobs(Generic[Job]):
    def __init__(self, jobs_max: int, lane_jobs_max: Mapping[str, int] | None = None):
        """``jobs_max``: jobs waiting in all lanes together; ``lane_jobs_max``: the lanes
        besides DEFAULT_LANE, each with its own bound of jobs waiting in it."""
        if jobs_max < 1:
            raise AssertionError(f"jobs_max {jobs_max} must be at least 1")
        lanes = {DEFAULT_LANE: jobs_max, **(lane_jobs_max or {})}
        for lane, lane_max in lanes.items():
            if lane_max < 1:
                raise AssertionError(f"lane {lane!r}: jobs max {lane_max} must be at least 1")
        self._jobs_max = jobs_max
        self._lane_jobs_max = lanes
        self._queued_count = 0
        self._lane_queued_count = dict.fromkeys(lanes, 0)
        # Each waiting client's (lane, job)s, oldest first; clients in the order their
        # oldest waiting job arrived (a client moves to the end once one is taken).
        self._waiting: OrderedDict[bytes, deque[tuple[str, Job]]] = OrderedDict()
        self._serving: set[bytes] = set()
        self._closed = False
        self._lock = threading.Lock()
        # One per lane, so that a job wakes a thread that may take it.
        self._lane_changed = {lane: threading.Condition(self._lock) for lane in lanes}

    def put_nowait(self, client_id: bytes, job: Job, lane: str = DEFAULT_LANE) -> bool:
        """Queue ``job`` in ``lane`` after ``client_id``'s earlier ones; False, never
        blocking, if ``jobs_max`` jobs already wait, or the lane's max in that lane
        (or the queue is closed)."""
        with self._lock:
            if self._closed or self._queued_count >= self._jobs_max \
                    or self._lane_queued_count[lane] >= self._lane_jobs_max[lane]:
                return False
            jobs = self._waiting.setdefault(client_id, deque())
            jobs.append((lane, job))
            self._queued_count += 1
            self._lane_queued_count[lane] += 1
            if client_id not in self._serving and len(jobs) == 1:
                self._lane_changed[lane].notify()
            return True

    def take(self, lane: str = DEFAULT_LANE) -> tuple[bytes, Job] | None:
        """The oldest job in ``lane`` of the first waiting client no other thread serves
        and whose next job it is, marked as served until ``done``; blocks until there
        is one. None once ``close``d."""
        with self._lock:
            while True:
                if self._closed:
                    return None
                client_id = next((c for c, jobs in self._waiting.items()
                                  if c not in self._serving and jobs[0][0] == lane), None)
                if client_id is not None:
                    return client_id, self._take_from_locked(client_id)
                self._lane_changed[lane].wait()

    def done(self, client_id: bytes) -> None:
        """The job ``take`` gave for ``client_id`` is answered: its next may be taken."""
        with self._lock:
            if client_id not in self._serving:
                raise AssertionError(f"done({client_id!r}) without a job taken for it")
            self._serving.discard(client_id)
            jobs = self._waiting.get(client_id)
            if jobs:
                self._lane_changed[jobs[0][0]].notify()

    def close(self) -> None:
        """Wake every thread in ``take``: each gets None, now and later."""
        with self._lock:
            self._closed = True
            for changed in self._lane_changed.values():
                changed.notify_all()

    def queued_count(self, lane: str | None = None) -> int:
        """Jobs waiting to be taken, in ``lane`` or in all (for tests and stats)."""
        with self._lock:
            return self._queued_count if lane is None else self._lane_queued_count[lane]

    def _take_from_locked(self, client_id: bytes) -> Job:
        jobs = self._waiting.pop(client_id)
        lane, job = jobs.popleft()
        if jobs:
            self._waiting[client_id] = jobs   # to the end: the other clients go first
        self._queued_count -= 1
        self._lane_queued_count[lane] -= 1
        self._serving.add(client_id)
        return job
