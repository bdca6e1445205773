"""Which data dir owns its objects in a tiered store: the claim, its lease, and the fence.

A copy of a data dir (a backup restored, a hot copy, a relocation gone wrong)
holds the same topics, with the same topic ids, as its original, so both name
the same objects in the store (remote_segment.py keys them by topic id). Before
this module, a topic deleted (or records deleted) on a copy deleted the
original's remote segments (tester B, session 40: 7,985 records). Each data dir
now claims its objects, and only the data dir holding the claim deletes any.

A data dir's identity (``data_dir_id``, 32 hex digits) is made the first time
it starts with ``--tier-url`` and is copied with it: a copy and its original
share it, unrelated data dirs never do (they may share a store: their topic ids
differ, so nothing they hold overlaps). Each identity has one claim object:

    _plinth/claims/<data_dir_id>.json      one JSON object, sorted keys, UTF-8

Fields: ``version`` (CLAIM_VERSION), ``data_dir_id``, ``epoch`` (raised by one
at every start that claims), ``instance_id`` (32 hex digits, new at every start
of a server: the shards compare it with their own), ``host`` and ``data_dir``
(where the claiming server runs: for messages, and to tell a restart of the
same data dir from a copy of it), ``pid``, ``written_ms`` and
``lease_until_ms`` (the claiming server renews it every
TIER_CLAIM_RENEW_INTERVAL_S to TIER_CLAIM_LEASE_S ahead; a clean stop sets it
to 0). The server's own record, in the data dir:

    <data-dir>/tier_claim.json     {"data_dir_id": "...", "epochs": {"<store identity>": N}}

The rules at a start (``claim_store``), for the data dir's identity D holding
epoch E of this store, the store's claim for D holding epoch S:

- No claim in the store (a first start, a new store): claim it.
- S > E: another copy of D has claimed the store since D's last start (D is a
  backup restored, or the original of a copy that has run since): refused,
  unless ``--tier-store-take-over``, because that copy may have deleted, and
  may still delete, objects D's logs refer to.
- A lease still running, written by a server on another host or for another
  data dir path (and, on this host, by a process still there): a copy runs
  beside its original. Refused, take-over or not (it would end that broker's
  deletions without telling it).
- Otherwise (the same data dir restarting, even after a kill -9; a lease run
  out): claim it, at epoch max(E, S) + 1. The data dir's file is written before
  the store's object, so a crash between the two leaves E > S, which is ours.

A shard deletes remote objects (retention, deleteRecords, a deleted topic) only
while the claim names its server's ``instance_id`` under a running lease
(``ClaimFence``); otherwise the deletion waits and is retried, and the server
that lost the claim logs an ERROR. Uploads are not fenced: they add objects
under fresh names (remote_segment.py), they never remove any.

Two data dirs that first start with a tier within one store round trip of each
other are not told apart: the store's put is not conditional on the claim read.
A copy made before its original ever started with ``--tier-url`` (no identity
to copy) gets an identity of its own, unrelated to its original's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from plinth import limits
from plinth.durable_files import write_json_atomically
from plinth.errors import (CorruptDataError, InvalidConfigError, RemoteObjectNotFoundError,
                           StorageError, TierStoreNotOwnedError, UnavailableError)
from plinth.shards.tier.remote_store import RemoteStore
from plinth.shards.tier.remote_transfer import wall_clock_ms

log = logging.getLogger(__name__)

CLAIM_VERSION = 1
CLAIMS_PREFIX = "_plinth/claims/"
CLAIM_FILE = "tier_claim.json"
_ID_HEX_DIGITS = 32


def claim_key(data_dir_id: str) -> str:
    """The claim object's key for data dir identity ``data_dir_id``."""
    if len(data_dir_id) != _ID_HEX_DIGITS or any(c not in "0123456789abcdef" for c in data_dir_id):
        raise AssertionError(f"data dir id {data_dir_id!r} is not {_ID_HEX_DIGITS} hex digits")
    return f"{CLAIMS_PREFIX}{data_dir_id}.json"


@dataclasses.dataclass(frozen=True)
class StoreClaim:
    """The claim object (module docstring), field by field."""

    data_dir_id: str
    epoch: int
    instance_id: str
    host: str
    data_dir: str
    pid: int
    written_ms: int
    lease_until_ms: int

    def to_bytes(self) -> bytes:
        return json.dumps({"version": CLAIM_VERSION, **dataclasses.asdict(self)},
                          sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> StoreClaim:
        """Raises CorruptDataError naming ``where`` for an object that is not a claim."""
        try:
            record = json.loads(data)
            if record.get("version") != CLAIM_VERSION:
                raise ValueError(f"version {record.get('version')!r}, not {CLAIM_VERSION}")
            return cls(str(record["data_dir_id"]), int(record["epoch"]),
                       str(record["instance_id"]), str(record["host"]),
                       str(record["data_dir"]), int(record["pid"]),
                       int(record["written_ms"]), int(record["lease_until_ms"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptDataError(f"{where} is not a Plinth tier claim: "
                                   f"{type(exc).__name__}: {exc}") from None

    def leased_at(self, now_ms: int) -> bool:
        return self.lease_until_ms > now_ms

    def same_place(self, host: str, data_dir: str) -> bool:
        """Whether it was written by a server of data dir path ``data_dir`` on ``host``
        (the data dir's lock then says no other server runs on it)."""
        return self.host == host and self.data_dir == data_dir

    def where(self) -> str:
        """For messages: which server wrote it, and when its lease ends."""
        written = _utc(self.written_ms)
        lease = (time.strftime("%H:%M:%SZ", time.gmtime(self.lease_until_ms / 1000))
                 if self.lease_until_ms else "released")
        return (f"data dir {self.data_dir} on host {self.host} (pid {self.pid}), epoch "
                f"{self.epoch}, written {written}, lease {lease}")


def read_claim(store: RemoteStore, data_dir_id: str) -> StoreClaim | None:
    """The store's claim for ``data_dir_id``, or None. Store errors pass up, and
    CorruptDataError for an object that is not a claim."""
    key = claim_key(data_dir_id)
    try:
        data = store.get(key)
    except RemoteObjectNotFoundError:
        return None
    return StoreClaim.from_bytes(data, f"{store.url}/{key}")


# --- The data dir's record (server process) ------------------------------------------


def _load_local(data_dir: Path) -> tuple[str | None, dict[str, int]]:
    """(data_dir_id or None, epochs by store identity) from the data dir's file.
    InvalidConfigError naming the file if it is damaged."""
    path = data_dir / CLAIM_FILE
    try:
        record = json.loads(path.read_bytes())
        data_dir_id = str(record["data_dir_id"])
        claim_key(data_dir_id)   # checks its form
        epochs = {str(store): int(epoch) for store, epoch in record["epochs"].items()}
    except FileNotFoundError:
        return None, {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, AssertionError) as exc:
        raise InvalidConfigError(f"{path} cannot be read ({type(exc).__name__}: {exc}): it "
                                 f"records which tier store objects this data dir owns; "
                                 f"restore it from a backup (or remove it: this data dir "
                                 f"then gets a new identity, and its copies made before are "
                                 f"no longer told apart from it)") from None
    return data_dir_id, epochs


def _save_local(data_dir: Path, data_dir_id: str, epochs: dict[str, int]) -> None:
    write_json_atomically(data_dir / CLAIM_FILE, {"data_dir_id": data_dir_id,
                                                 "epochs": dict(sorted(epochs.items()))})


# --- A start's claim (server process) ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClaimStart:
    """Who this start is: ``instance_id`` goes to every shard (TierOptions)."""

    data_dir_id: str
    instance_id: str
    host: str
    data_dir: str


def new_start(data_dir: Path) -> ClaimStart:
    """This start's identity; makes the data dir's identity on a first start (server
    process, before the claim)."""
    data_dir_id, epochs = _load_local(data_dir)
    if data_dir_id is None:
        data_dir_id = uuid.uuid4().hex
        _save_local(data_dir, data_dir_id, epochs)
    return ClaimStart(data_dir_id, uuid.uuid4().hex, socket.gethostname(),
                      str(data_dir.resolve()))


def claim_store(store: RemoteStore, store_identity: str, data_dir: Path, start: ClaimStart, *,
                take_over: bool, now_ms: int | None = None) -> StoreClaim:
    """Claim ``store`` for ``start``'s data dir by the rules in the module docstring
    (server process, main thread, at start). InvalidConfigError naming both data
    dirs if refused; the store's errors (RemoteStorageUnavailableError) pass up."""
    now_ms = wall_clock_ms() if now_ms is None else now_ms
    _, epochs = _load_local(data_dir)
    held = epochs.get(store_identity, 0)
    try:
        found = read_claim(store, start.data_dir_id)
    except CorruptDataError as exc:
        if not take_over:
            raise InvalidConfigError(
                f"{exc}. It says which copy of this data dir may delete its objects in the "
                f"tier store {store_identity}, and no copy can be told apart from another "
                f"while it is damaged. If no other copy of this data dir runs with this "
                f"--tier-url, start with --tier-store-take-over: it replaces the object "
                f"with this data dir's claim") from None
        log.error("%s: replaced by this data dir's claim (--tier-store-take-over)", exc)
        found = None
    if found is not None:
        _refuse_unless_ours(found, held, store_identity, start, take_over, now_ms)
    epoch = max(held, found.epoch if found else 0) + 1
    epochs[store_identity] = epoch
    _save_local(data_dir, start.data_dir_id, epochs)   # first: see the module docstring
    claim = StoreClaim(start.data_dir_id, epoch, start.instance_id, start.host,
                       start.data_dir, os.getpid(), now_ms,
                       now_ms + int(limits.TIER_CLAIM_LEASE_S * 1000))
    store.put(claim_key(start.data_dir_id), claim.to_bytes())
    return claim


def _refuse_unless_ours(found: StoreClaim, held: int, store_identity: str, start: ClaimStart,
                        take_over: bool, now_ms: int) -> None:
    here = f"this data dir ({start.data_dir} on host {start.host})"
    if (found.leased_at(now_ms) and not found.same_place(start.host, start.data_dir)
            and not _dead_here(found, start.host)):
        raise InvalidConfigError(
            f"the tier store {store_identity} holds objects of this data dir's topics, and "
            f"a running broker of a copy of this data dir claims them: {found.where()}. "
            f"A copy must not run beside its original with the same --tier-url (its topic "
            f"deletions and retention would delete the original's remote segments): stop "
            f"that broker first (if it was killed and no longer runs, start this one once "
            f"its lease has run out, within {limits.TIER_CLAIM_LEASE_S:.0f} s of its death)")
    if found.epoch > held and not take_over:
        raise InvalidConfigError(
            f"the tier store {store_identity} was claimed since {here} last started: "
            f"{found.where()}, past this data dir's epoch {held}. This data dir is an older "
            f"copy (a backup restored, or the original of a copy that has run since), and "
            f"that copy may have deleted remote segments this one's logs refer to. To make "
            f"this data dir the store's owner from now on, start it with "
            f"--tier-store-take-over (the other copy then deletes nothing there)")


def _dead_here(found: StoreClaim, host: str) -> bool:
    """Whether the claim's server ran on this host and its process is gone (a kill -9,
    then the data dir moved): its lease need not be waited out. A pid reused since
    by another process only makes the start wait for the lease, never the reverse."""
    if found.host != host:
        return False
    try:
        os.kill(found.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:   # a process of another user has the pid
        return False
    return False


# --- The lease (server process, its own thread) ----------------------------------------


class ClaimKeeper:
    """The server's claim on its store, from the start to the stop (server process).

    ``claim_at_start`` (main thread) starts the keeper's thread, which claims the
    store at once, and waits up to TIER_CLAIM_START_WAIT_S for it: InvalidConfigError
    if the rules refuse. A store that fails (or refuses the credentials), or does not
    answer within the wait, leaves the claim to the keeper's next rounds, and the
    shards' deletions wait till then (a refusal found then is an ERROR, and the claim
    is not made). The thread renews the lease every TIER_CLAIM_RENEW_INTERVAL_S; a
    claim found taken by another start, or damaged, is an ERROR, logged once, and no
    longer renewed; a claim found gone (the store lost it) is written again. ``state`` says which of these holds, for ``plinth status`` and
    the metrics; the callback given to ``report_to`` hears it after every round
    (a controller that restarted learns it within a round).
    ``release`` (main thread, at stop) ends the lease so that a copy may start at once."""

    def __init__(self, store: RemoteStore, store_identity: str, data_dir: Path,
                 start: ClaimStart, *, take_over: bool):
        self._store = store
        self._store_identity = store_identity
        self._data_dir = data_dir
        self._start = start
        self._take_over = take_over
        self._claim: StoreClaim | None = None   # once claimed
        self._lost: str | None = None           # why the claim is no longer this start's
        self._failure: str | None = None        # the last round's store error, if any
        self._report: Callable[[ClaimState], None] | None = None
        self._refused: InvalidConfigError | None = None   # the first round's, for the start
        self._start_waits = True    # claim_at_start still waits for the first round
        self._first_round = threading.Event()
        self._start_lock = threading.Lock()   # the two above, between the two threads
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tier-claim-keeper",
                                        daemon=True)

    @property
    def claim(self) -> StoreClaim | None:
        return self._claim

    def state(self) -> ClaimState:
        """Whether this start holds the claim, and one line saying what the claim is
        (any thread: a snapshot)."""
        if self._lost is not None:
            return ClaimState(False, f"NOT HELD: {self._lost}: this broker deletes no remote "
                                     f"segments in {self._store_identity}", self._store_identity)
        if self._claim is None:
            return ClaimState(False, f"NOT HELD yet: {self._failure or 'waiting for the store to answer'}; "
                                     f"remote segments in {self._store_identity} are not "
                                     f"deleted until it is (retried every "
                                     f"{limits.TIER_CLAIM_RENEW_INTERVAL_S:.0f} s)",
                              self._store_identity)
        renewed = (f"; the last renewal failed: {self._failure}" if self._failure else "")
        return ClaimState(True, f"held at epoch {self._claim.epoch} in {self._store_identity}, "
                                f"lease until {_utc(self._claim.lease_until_ms)}{renewed}",
                          self._store_identity)

    def report_to(self, report: Callable[[ClaimState], None]) -> None:
        """Give ``report`` the state now and after every round (its errors are logged,
        not raised). Once, before the keeper's thread calls it: the server, once its
        controller runs."""
        self._report = report
        self._say_state()

    def claim_at_start(self) -> None:
        """Start the keeper's thread, and wait for its first claim (class docstring)."""
        self._thread.start()
        answered = self._first_round.wait(limits.TIER_CLAIM_START_WAIT_S)
        with self._start_lock:
            self._start_waits = False
            answered = answered or self._first_round.is_set()
        if not answered:
            log.warning("the tier store %s did not answer this data dir's claim within "
                        "%.0f s: the start goes on, and the claim is made once it answers; "
                        "remote segments are deleted only then", self._store_identity,
                        limits.TIER_CLAIM_START_WAIT_S)
        elif self._refused is not None:
            raise self._refused
        elif self._failure is not None:
            log.warning("the tier store %s could not be claimed for this data dir at start "
                        "(%s): remote segments are deleted only once it is, retried "
                        "every %.0f s", self._store_identity, self._failure,
                        limits.TIER_CLAIM_RENEW_INTERVAL_S)

    def _first_claim(self) -> bool:
        """The thread's first round; False if the rules refused the claim (the start
        raises it, or, if it no longer waits, the claim is lost)."""
        try:
            self._claim_store()
        except InvalidConfigError as exc:
            with self._start_lock:
                if self._start_waits:
                    self._refused = exc
                else:
                    self._lose(str(exc))
            return False
        except (StorageError, UnavailableError) as exc:
            self._failure = f"{type(exc).__name__}: {exc}"
        finally:
            self._first_round.set()
        return True

    def _claim_store(self) -> None:
        self._claim = claim_store(self._store, self._store_identity, self._data_dir,
                                  self._start, take_over=self._take_over)
        self._failure = None
        log.info("claimed the tier store %s for this data dir (epoch %d)",
                 self._store_identity, self._claim.epoch)

    def _run(self) -> None:
        if not self._first_claim():
            return
        self._say_state()
        while not self._stopped.wait(limits.TIER_CLAIM_RENEW_INTERVAL_S):
            if self._lost is None:
                self._one_round()
            self._say_state()

    def _one_round(self) -> None:
        try:
            if self._claim is None:
                self._claim_store()
            else:
                self.renew()
        except InvalidConfigError as exc:
            self._lose(str(exc))
        except (StorageError, UnavailableError) as exc:   # the next round retries
            # Once per failure streak: a store down for an hour is one line, not 360
            # (plinth status and the metric say it meanwhile).
            level = logging.DEBUG if self._failure else logging.WARNING
            self._failure = f"{type(exc).__name__}: {exc}"
            log.log(level, "the tier store claim could not be %s, retried every %.0f s: %s",
                    "made" if self._claim is None else "renewed",
                    limits.TIER_CLAIM_RENEW_INTERVAL_S, self._failure)

    def _say_state(self) -> None:
        if self._report is None:
            return
        try:
            self._report(self.state())
        except Exception as exc:   # the controller is away: the next round says it again
            log.debug("the tier store claim's state was not reported: %s: %s",
                      type(exc).__name__, exc)

    def _lose(self, why: str) -> None:
        self._lost = why
        log.error("%s: this broker deletes no remote segments in %s from now on", why,
                  self._store_identity)

    def renew(self, now_ms: int | None = None) -> bool:
        """Extend the lease if the claim is still this start's; False if it is not, or
        not made yet (the keeper's thread; tests)."""
        if self._lost is not None or self._claim is None:
            return False
        now_ms = wall_clock_ms() if now_ms is None else now_ms
        try:
            found = read_claim(self._store, self._claim.data_dir_id)
        except CorruptDataError as exc:
            self._lose(f"{exc}; restart this broker with --tier-store-take-over to replace "
                       f"it with its claim, if no other copy of its data dir runs")
            return False
        if found is None:   # deleted out of band, or the store lost it: no one else's
            log.warning("the tier store claim of this data dir was gone from %s (deleted, or "
                        "the store lost objects): written again, epoch %d",
                        self._store_identity, self._claim.epoch)
        elif found.instance_id != self._claim.instance_id:
            self._lose(f"the tier store claim of this data dir was taken by another start "
                       f"({found.where()}); stop this broker, it is the older copy")
            return False
        self._claim = dataclasses.replace(
            self._claim, written_ms=now_ms,
            lease_until_ms=now_ms + int(limits.TIER_CLAIM_LEASE_S * 1000))
        self._store.put(claim_key(self._claim.data_dir_id), self._claim.to_bytes())
        if self._failure:
            log.info("the tier store claim is renewed again (epoch %d)", self._claim.epoch)
            self._failure = None
        return True

    def release(self) -> None:
        """Stop renewing and end the lease, if the claim is still this start's. Best
        effort, within about twice TIER_CLAIM_RELEASE_WAIT_S: a store that does not
        answer leaves the lease to run out."""
        self._stopped.set()
        self._thread.join(limits.TIER_CLAIM_RELEASE_WAIT_S)
        if self._claim is None or self._lost is not None:
            return
        if self._thread.is_alive():   # its call to the store hangs: so would ours
            self._say_unreleased("the store did not answer the last renewal")
            return
        releasing = threading.Thread(target=self._release_lease, name="tier-claim-release",
                                     daemon=True)
        releasing.start()
        releasing.join(limits.TIER_CLAIM_RELEASE_WAIT_S)
        if releasing.is_alive():
            self._say_unreleased(f"the store did not answer within "
                                 f"{limits.TIER_CLAIM_RELEASE_WAIT_S:.0f} s")

    def _release_lease(self) -> None:
        try:
            found = read_claim(self._store, self._claim.data_dir_id)
            if found is not None and found.instance_id == self._claim.instance_id:
                released = dataclasses.replace(found, written_ms=wall_clock_ms(),
                                               lease_until_ms=0)
                self._store.put(claim_key(found.data_dir_id), released.to_bytes())
        except (StorageError, UnavailableError, CorruptDataError) as exc:
            self._say_unreleased(f"{type(exc).__name__}: {exc}")

    def _say_unreleased(self, why: str) -> None:
        log.warning("the tier store claim's lease could not be released (%s): a copy of "
                    "this data dir can claim the store once it runs out, within %.0f s",
                    why, limits.TIER_CLAIM_LEASE_S)


@dataclasses.dataclass(frozen=True)
class ClaimState:
    """What ``ClaimKeeper.state`` says: whether this start holds the claim on ``store``
    (its identity: no credentials), and a line."""

    held: bool
    line: str
    store: str


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


# --- The fence (shard actor, uploader thread) ---------------------------------------------


class ClaimFence:
    """Answers, before a deletion, whether the claim still names this server's start
    under a running lease (uploader thread). A positive answer is kept for half the
    lease at most, and never past it."""

    def __init__(self, store: RemoteStore, data_dir_id: str, instance_id: str):
        self._store = store
        self._data_dir_id = data_dir_id
        self._instance_id = instance_id
        self._owned_until_ms = 0

    def check(self, now_ms: int | None = None) -> None:
        """Returns if deleting is allowed; TierStoreNotOwnedError naming the claim if not.
        The store's own errors pass up (the deletion is retried either way)."""
        now_ms = wall_clock_ms() if now_ms is None else now_ms
        if now_ms < self._owned_until_ms:
            return
        found = read_claim(self._store, self._data_dir_id)
        if (found is None or found.instance_id != self._instance_id
                or not found.leased_at(now_ms)):
            self._owned_until_ms = 0
            raise TierStoreNotOwnedError(
                f"not deleting in {self._store.url} (retention, deleted topics and the "
                f"clean-up before a retried upload wait for the claim): this broker's claim "
                f"on it "
                + ("is gone" if found is None else
                   "has run out" if found.instance_id == self._instance_id else
                   f"was taken by another copy of its data dir: {found.where()}"))
        self._owned_until_ms = min(found.lease_until_ms,
                                   now_ms + int(limits.TIER_CLAIM_LEASE_S * 500))
