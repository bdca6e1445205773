"""A shard Ray gave up on is started again by the controller (control/shard_revivals.py,
Controller.revive_dead_shards), after a backoff that doubles from
SHARD_REVIVAL_BACKOFF_S_MIN at each death of its new actor, with one ERROR line when
Ray gives up, and ``plinth status`` saying why it is DOWN meanwhile. Real shard
actors reached in process (broker_without_ray.py); a ``kill()``ed one is dead for
good, as after Ray's restarts ran out (its name is free). Without Ray there is no
reviver thread (control/shard_reviver.py): ``look`` makes its call, and status and
the leader checks never start an actor themselves."""

from __future__ import annotations

import concurrent.futures
import os

from plinth import limits
from plinth.actor_failures import killed_how
from plinth.shards.shard_handle import PendingCall
from tests.control.test_controller_replication import ON_ONE_NODE

CONTROLLER = "plinth.control.controller"
# Ray's DeathCause of a SIGKILLed actor (Ray 2.60), up to its list of common causes
RAY_SIGKILLED = ("The actor is dead because its worker process has died. Worker exit type: "
                 "SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a "
                 "connection error code 2. End of file. Some common causes include: ...")
KILLED_HOW = killed_how(RAY_SIGKILLED)
# Ray's DeathCause (protobuf text) of an actor that raised in its constructor
RAY_CONSTRUCTOR_RAISED = ('creation_task_failure_context {\n  error_message: "StorageError: '
                          '... is locked by another shard process after waiting 30.0 s"\n}')


class SteppedClock:
    def __init__(self):
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def with_clock(broker) -> SteppedClock:
    clock = SteppedClock()
    broker.controller._monotonic_s = clock   # the controller's one stepped clock (tests)
    return clock


def shard_status(broker, shard_id: str):
    return next(s for s in broker.controller.status().shards if s.shard_id == shard_id)


def killed_for_good(broker, shard_id: str, restarts: int = limits.SHARD_RESTARTS_MAX,
                    cause: str = RAY_SIGKILLED) -> None:
    """Ray gave up on the shard's actor after ``restarts`` restarts, the last death ``cause``."""
    handle = broker.shards.handles[shard_id]
    handle.died = (restarts, cause)
    handle.kill()


def look(broker) -> dict:
    """One look of the reviver thread (none runs without Ray): the new actors it started."""
    return broker.controller.revive_dead_shards().started


def found_dead(broker, shard_id: str):
    """A status call misses the shard, then the reviver looks: its status after that."""
    shard_status(broker, shard_id)
    look(broker)
    return shard_status(broker, shard_id)


class StillInItsConstructor:
    """A shard's new actor whose constructor has not returned (its directory locked by
    another process, a long recovery), as Ray shows it: every call to it waits, queued,
    and its announcement (``shard_started``) has not come. In process the actor is made,
    and announces itself, at once: its calls are queued here and its announcement held,
    until ``returns()`` runs them in order and then announces it. Its word that its
    process starts (``shard_starting``) goes through: it comes before the constructor's
    wait."""

    def __init__(self, broker, shard_id: str):
        self._shard_id = shard_id
        self._announce_to = broker.shards.announce_to
        self._held: list[tuple] = []      # its announcements, held
        self._queued: list[tuple] = []    # the calls to it, queued
        self._handle = None
        self._returned = False
        broker.shards.announce_to = self
        broker.shards.when_started(shard_id, self._arm)

    def __getattr__(self, name: str):   # the other announcements, and the other shards'
        return getattr(self._announce_to, name)

    def shard_started(self, shard_id: str, *args, **kwargs) -> None:
        if shard_id != self._shard_id or self._returned:
            return self._announce_to.shard_started(shard_id, *args, **kwargs)
        self._held.append((shard_id, args, kwargs))

    def _arm(self, handle) -> None:
        self._handle = handle
        handle._start = self._queue

    def _queue(self, method, *args) -> PendingCall:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queued.append((method, args, future))
        return PendingCall(self._shard_id, method.__name__, future)

    def queued(self) -> list[str]:
        """The calls made to the actor so far, waiting for its constructor."""
        return [method.__name__ for method, _, _ in self._queued]

    def returns(self) -> None:
        """The constructor returned: the calls queued meanwhile run, in order, and the
        shard announces itself."""
        self._returned = True
        del self._handle._start   # the handle's own again
        for method, args, future in self._queued:
            done = self._handle._start(method, *args)._future
            if done.exception() is not None:
                future.set_exception(done.exception())
            else:
                future.set_result(done.result())
        for shard_id, args, kwargs in self._held:
            self._announce_to.shard_started(shard_id, *args, **kwargs)


def new_actor_still_in_its_constructor(broker, shard_id: str) -> StillInItsConstructor:
    """Ray gives up on ``shard_id``, and the reviver starts a new actor for it, whose
    constructor has not returned yet."""
    clock = with_clock(broker)
    killed_for_good(broker, shard_id)
    found_dead(broker, shard_id)
    clock.now_s += limits.SHARD_REVIVAL_BACKOFF_S_MIN
    stuck = StillInItsConstructor(broker, shard_id)
    assert list(look(broker)) == [shard_id]
    return stuck


def test_a_shard_ray_gave_up_on_gets_a_new_actor_after_the_backoff_and_serves_again(
        brokers, caplog):
    # Given two shards, shard-1 holding records of one partition
    broker = brokers(2)
    clock = with_clock(broker)
    broker.controller.create_topic("t", 2, {})
    partition = next(p for p in range(2) if broker.owner("t", p) == "shard-1")
    assert broker.produce("t", partition, [b"a", b"b"]) == 0
    # When Ray gives up on shard-1 (its 100 restarts used up, killed by SIGKILL)
    killed_for_good(broker, "shard-1")
    with caplog.at_level("INFO", logger=CONTROLLER):
        down = found_dead(broker, "shard-1")
        # Then it is DOWN, saying why and when it starts again, and one ERROR says so
        assert not down.alive
        assert down.down_reason == (f"restarting: died 101 times ({KILLED_HOW}), "
                                    f"next start in 5 s")
        errors = [r.getMessage() for r in caplog.records
                  if r.name == CONTROLLER and r.levelname == "ERROR"]
        assert errors == [f"shard-1 died 101 times ({KILLED_HOW}); Ray's restarts "
                          f"(SHARD_RESTARTS_MAX 100) are used up; starting a new actor in 5 s"]
        # And before the backoff has passed no new actor starts
        clock.now_s += limits.SHARD_REVIVAL_BACKOFF_S_MIN - 1
        assert look(broker) == {}
        assert not shard_status(broker, "shard-1").alive
        # When it has passed, the next look starts one, which serves the shard's records
        clock.now_s += 1
        assert list(look(broker)) == ["shard-1"]
        up = shard_status(broker, "shard-1")
    assert up.alive and up.down_reason == ""
    assert broker.produce("t", partition, [b"c"]) == 2
    assert any(r.getMessage() == "shard-1 serves again, in a new actor, after 101 deaths"
               for r in caplog.records)


def test_a_new_actor_that_dies_again_waits_twice_as_long_each_time(brokers, caplog):
    # Given shard-1, which Ray gave up on, and its first new actor started
    broker = brokers(2)
    clock = with_clock(broker)
    killed_for_good(broker, "shard-1")
    found_dead(broker, "shard-1")
    clock.now_s += limits.SHARD_REVIVAL_BACKOFF_S_MIN
    look(broker)
    assert shard_status(broker, "shard-1").alive
    # When the new actor is killed at once too (the memory limit is still too small)
    with caplog.at_level("WARNING", logger=CONTROLLER):
        for backoff_s, deaths_known in ((10, 102), (20, 103), (40, 104)):
            killed_for_good(broker, "shard-1", restarts=0)
            found_dead(broker, "shard-1")
            # Then each death's WARNING names the shard and how it died, and the next
            # start waits twice as long as the last
            assert shard_status(broker, "shard-1").down_reason.endswith(
                f"next start in {backoff_s} s")
            deaths = [r.getMessage() for r in caplog.records if "died again" in r.getMessage()]
            assert deaths[-1] == (f"shard-1 died again ({KILLED_HOW}) ({deaths_known} deaths); "
                                  f"starting a new actor in {backoff_s} s")
            clock.now_s += backoff_s - 1
            look(broker)
            assert not shard_status(broker, "shard-1").alive
            clock.now_s += 1
            look(broker)
            assert shard_status(broker, "shard-1").alive


def test_the_backoff_stops_doubling_at_its_max(brokers):
    # Given shard-0, which Ray gave up on, and new actors that die one after the other
    broker = brokers(1)
    clock = with_clock(broker)
    killed_for_good(broker, "shard-0")
    found_dead(broker, "shard-0")
    waits = []
    for _ in range(9):
        reason = shard_status(broker, "shard-0").down_reason
        waits.append(int(reason.rpartition("next start in ")[2].split()[0]))
        clock.now_s += waits[-1]
        look(broker)
        assert shard_status(broker, "shard-0").alive
        killed_for_good(broker, "shard-0", restarts=0)
        found_dead(broker, "shard-0")
    # Then the waits double from the min, and stay at the max (with no bound on attempts)
    assert waits == [5, 10, 20, 40, 80, 160, 300, 300, 300]


def test_a_replicated_leader_ray_gave_up_on_is_started_again_once_the_leader_checks_miss_it(
        brokers):
    # Given a factor-3 topic
    broker = brokers(3, **ON_ONE_NODE)
    clock = with_clock(broker)
    broker.controller.create_topic("t", 1, {}, 3)
    leader = broker.metadata_on_disk().topics["t"].leadership[0].leader
    # When Ray gives up on its leader, and the reviver looks past the backoff
    killed_for_good(broker, leader)
    broker.controller.check_leaders()   # its ping fails: another replica leads
    look(broker)                        # it is dead for good: scheduled
    clock.now_s += limits.SHARD_REVIVAL_BACKOFF_S_MIN
    look(broker)                        # due: a new actor
    # Then it serves again, a replica of the partition
    assert shard_status(broker, leader).alive
    assert broker.shards.handles[leader]._alive


def test_a_shard_killed_while_it_starts_is_named_by_its_process(brokers):
    # Given shard-1's new process (pid 4242) said it starts, and was killed before it
    # announced where it listens (the OOM killer during its start-up)
    broker = brokers(2)
    broker.controller.shard_starting("shard-1", 4242)
    # Then the server's line on that worker's death names the shard
    assert broker.controller.process_owner(4242) == "shard-1"
    # And its earlier process stays named too
    broker.controller.shard_starting("shard-1", 4243)
    assert broker.controller.process_owner(4242) == "shard-1"


def test_a_workers_death_has_the_reviver_look_at_every_shard_for_ones_ray_gave_up_on(
        brokers, caplog):
    # Given a broker without replicated partitions (its lease sleeps), no status call,
    # and shard-1 dead for good
    broker = brokers(2)
    killed_for_good(broker, "shard-1")
    with caplog.at_level("ERROR", logger=CONTROLLER):
        look(broker)
        assert caplog.records == []   # nothing looked at it
        # When the server hears of a Ray worker's death (it asks whose process it was)
        broker.controller.process_owner(99999)
        look(broker)
    # Then the next look finds shard-1 dead for good, and schedules its new actor
    assert [r.getMessage().split(";")[0] for r in caplog.records if r.levelname == "ERROR"] == [
        f"shard-1 died 101 times ({KILLED_HOW})"]


def test_status_and_the_leader_checks_only_read_the_schedule_and_start_no_actor(brokers, caplog):
    # Given shard-1, which Ray gave up on, and status calls and leader checks that miss
    # it, long past any backoff
    broker = brokers(2)
    clock = with_clock(broker)
    dead_handle = broker.shards.handles["shard-1"]
    killed_for_good(broker, "shard-1")
    with caplog.at_level("ERROR", logger=CONTROLLER):
        for _ in range(3):
            down = shard_status(broker, "shard-1")
            broker.controller.check_leaders()
            clock.now_s += limits.SHARD_REVIVAL_BACKOFF_S_MAX
    # Then none of them scheduled or started a new actor: that is the reviver's alone
    assert not down.alive and down.down_reason == ""
    assert broker.shards.handles["shard-1"] is dead_handle
    assert caplog.records == []


def test_a_shard_whose_actor_raised_in_its_constructor_is_not_started_again_and_status_says_why(
        brokers):
    # Given shard-1's actor, which raised in its constructor (Ray does not restart it)
    broker = brokers(2)
    clock = with_clock(broker)
    dead_handle = broker.shards.handles["shard-1"]
    killed_for_good(broker, "shard-1", restarts=0, cause=RAY_CONSTRUCTOR_RAISED)
    # When the reviver looks at it, and again long after any backoff
    down = found_dead(broker, "shard-1")
    clock.now_s += limits.SHARD_REVIVAL_BACKOFF_S_MAX
    assert look(broker) == {}
    # Then no new actor started, and status says it is DOWN, and why
    assert broker.shards.handles["shard-1"] is dead_handle
    assert not down.alive
    assert down.down_reason == ("shard-1 raised in its constructor (Ray's actor table), "
                                "and is not restarted")


def test_a_new_actor_that_raises_in_its_constructor_is_not_started_again_and_its_failure_is_shown(
        brokers, caplog):
    # Given shard-1, which Ray gave up on, and its new actor started
    broker = brokers(2)
    clock = with_clock(broker)
    killed_for_good(broker, "shard-1")
    found_dead(broker, "shard-1")
    clock.now_s += limits.SHARD_REVIVAL_BACKOFF_S_MIN
    [new_handle] = look(broker).values()
    # When that actor raises in its constructor (its directory now locked by another
    # process), as the reviver hears from its first call
    killed_for_good(broker, "shard-1", restarts=0, cause=RAY_CONSTRUCTOR_RAISED)
    why = "shard-1 could not start, and is not restarted: StorageError: ... is locked"
    broker.controller.revival_failed("shard-1", why)
    with caplog.at_level("ERROR", logger=CONTROLLER):
        look(broker)
    # Then one ERROR says it is not started again, and why
    assert [r.getMessage() for r in caplog.records if "not started again" in r.getMessage()] == [
        f"shard-1: its new actor raised in its constructor; not started again, as what it "
        f"raised is the operator's to fix (then restart the server): {why}"]
    # And status shows that failure as its reason, and no later look starts another
    assert shard_status(broker, "shard-1").down_reason == why
    clock.now_s += limits.SHARD_REVIVAL_BACKOFF_S_MAX
    assert look(broker) == {}
    assert broker.shards.handles["shard-1"] is new_handle


def test_status_shows_the_process_of_a_new_actor_still_in_its_constructor_and_asks_it_nothing(
        brokers):
    # Given shard-1's new actor (Ray gave up on shard-1), whose process 4242 said it starts
    # and is still in its constructor: it has not said where it listens, nor answers
    broker = brokers(2)
    dead_pid = shard_status(broker, "shard-1").pid
    stuck = new_actor_still_in_its_constructor(broker, "shard-1")
    broker.controller.shard_starting("shard-1", 4242)
    # When status is asked
    starting = shard_status(broker, "shard-1")
    # Then shard-1 is DOWN, its new actor starting, shown with that actor's process, not
    # with the dead one's (status showed no starting process since it was told on a query
    # thread)
    assert not starting.alive
    assert starting.down_reason.endswith("a new actor is starting")
    assert (starting.pid, dead_pid) == (4242, os.getpid())
    # And status asked the new actor nothing (a call would wait for its constructor)
    assert stuck.queued() == []
    # When its constructor returns and it announces itself (in process, from this process)
    stuck.returns()
    # Then it serves, shown with the process it announced
    up = shard_status(broker, "shard-1")
    assert up.alive and up.pid == os.getpid()
