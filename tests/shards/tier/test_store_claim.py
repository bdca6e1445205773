"""A data dir's claim on its objects in a tier store: the start rules, the lease, the fence."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import pytest

from plinth import limits
from plinth.errors import CorruptDataError, InvalidConfigError, TierStoreNotOwnedError
from plinth.shards.tier.remote_store import open_remote_store
from plinth.shards.tier.store_claim import (CLAIM_FILE, ClaimFence, ClaimKeeper, claim_key,
                                            claim_store, new_start, read_claim)

STORE = "file://store"   # the identity the claims are recorded under (any string)
LEASE_MS = int(limits.TIER_CLAIM_LEASE_S * 1000)


@pytest.fixture
def store(tmp_path):
    return open_remote_store(f"file://{tmp_path}/store")


@pytest.fixture
def original(tmp_path):
    data_dir = tmp_path / "original"
    data_dir.mkdir()
    return data_dir


def _copy(data_dir, tmp_path, name="copy"):
    copy = tmp_path / name
    shutil.copytree(data_dir, copy)
    return copy


def _exited_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _claim(store, data_dir, *, take_over=False, now_ms=1_000_000):
    start = new_start(data_dir)
    return start, claim_store(store, STORE, data_dir, start, take_over=take_over, now_ms=now_ms)


def test_a_first_start_claims_the_store_at_epoch_1_and_records_it_in_the_data_dir(store,
                                                                                 original):
    start, claim = _claim(store, original)
    assert claim.epoch == 1 and claim.instance_id == start.instance_id
    assert read_claim(store, start.data_dir_id) == claim
    local = json.loads((original / CLAIM_FILE).read_text())
    assert local == {"data_dir_id": start.data_dir_id, "epochs": {STORE: 1}}


def test_the_same_data_dir_restarting_while_its_lease_runs_claims_the_next_epoch(store,
                                                                               original):
    _claim(store, original, now_ms=1_000_000)   # as after a kill -9: the lease still runs
    start, claim = _claim(store, original, now_ms=1_000_001)
    assert claim.epoch == 2 and read_claim(store, start.data_dir_id).instance_id == \
        start.instance_id


def test_a_copy_is_refused_while_its_originals_lease_runs(store, original, tmp_path):
    _claim(store, original, now_ms=1_000_000)
    copy = _copy(original, tmp_path)
    with pytest.raises(InvalidConfigError, match="a running broker of a copy of this data dir") \
            as refused:
        _claim(store, copy, now_ms=1_000_000 + LEASE_MS - 1, take_over=True)
    assert str(original.resolve()) in str(refused.value)


def test_a_moved_data_dir_need_not_wait_for_the_lease_of_its_killed_server_on_this_host(
        store, original, tmp_path):
    start, claim = _claim(store, original, now_ms=1_000_000)
    dead = _exited_pid()
    store.put(claim_key(start.data_dir_id), dataclasses.replace(claim, pid=dead).to_bytes())
    moved = tmp_path / "moved"
    original.rename(moved)
    _, again = _claim(store, moved, now_ms=1_000_001)
    assert again.epoch == 2 and again.data_dir == str(moved.resolve())


def test_an_original_is_refused_once_a_copy_has_claimed_the_store_since(store, original,
                                                                        tmp_path):
    _claim(store, original, now_ms=1_000_000)
    copy = _copy(original, tmp_path)
    _claim(store, copy, now_ms=1_000_000 + LEASE_MS)   # the original's lease ran out
    with pytest.raises(InvalidConfigError, match=r"claimed since .* past this data dir's "
                                                 r"epoch 1") as refused:
        _claim(store, original, now_ms=1_000_000 + 2 * LEASE_MS)
    assert str(copy.resolve()) in str(refused.value)
    assert "--tier-store-take-over" in str(refused.value)


def test_take_over_makes_an_older_copy_the_owner_and_fences_the_newer_one(store, original,
                                                                          tmp_path):
    _claim(store, original, now_ms=1_000_000)
    backup = _copy(original, tmp_path, "backup")   # at epoch 1
    first, _ = _claim(store, original, now_ms=1_000_000 + LEASE_MS)
    with pytest.raises(InvalidConfigError, match="claimed since"):
        _claim(store, backup, now_ms=1_000_000 + 2 * LEASE_MS)
    backup_start, claim = _claim(store, backup, now_ms=1_000_000 + 2 * LEASE_MS, take_over=True)
    assert backup_start.data_dir_id == first.data_dir_id
    assert claim.epoch == 3 and claim.instance_id == backup_start.instance_id
    fence = ClaimFence(store, first.data_dir_id, first.instance_id)
    with pytest.raises(TierStoreNotOwnedError, match="taken by another copy"):
        fence.check(now_ms=1_000_000 + 2 * LEASE_MS + 1)


def test_the_fence_lets_the_owner_delete_only_while_its_lease_runs(store, original):
    start, _ = _claim(store, original, now_ms=1_000_000)
    fence = ClaimFence(store, start.data_dir_id, start.instance_id)
    fence.check(now_ms=1_000_001)
    with pytest.raises(TierStoreNotOwnedError, match="has run out"):
        fence.check(now_ms=1_000_000 + LEASE_MS)


def test_the_fence_refuses_when_the_claim_object_is_gone(store, original):
    start, _ = _claim(store, original)
    store.delete(claim_key(start.data_dir_id))
    with pytest.raises(TierStoreNotOwnedError, match="is gone"):
        ClaimFence(store, start.data_dir_id, start.instance_id).check(now_ms=1_000_001)


def test_a_released_lease_lets_a_copy_claim_at_once_and_the_original_is_then_refused(
        store, original, tmp_path):
    start = new_start(original)
    keeper = ClaimKeeper(store, STORE, original, start, take_over=False)
    keeper.claim_at_start()
    keeper.release()
    assert read_claim(store, start.data_dir_id).lease_until_ms == 0
    copy = _copy(original, tmp_path)
    _, taken = _claim(store, copy, now_ms=keeper.claim.written_ms + 1)   # at once
    with pytest.raises(InvalidConfigError, match="claimed since"):
        _claim(store, original, now_ms=taken.lease_until_ms)


def test_a_keeper_whose_claim_was_taken_stops_renewing_it(store, original, tmp_path):
    start = new_start(original)
    keeper = ClaimKeeper(store, STORE, original, start, take_over=False)
    keeper.claim_at_start()
    try:
        assert keeper.renew()
        copy = _copy(original, tmp_path)
        _, taken = _claim(store, copy, take_over=True,
                          now_ms=keeper.claim.lease_until_ms + 1)
        assert not keeper.renew()
        assert read_claim(store, start.data_dir_id) == taken   # not overwritten
    finally:
        keeper.release()
    assert read_claim(store, start.data_dir_id) == taken   # the release left it alone


def test_a_crash_between_the_data_dirs_record_and_the_stores_is_still_ours(store, original):
    start, claim = _claim(store, original, now_ms=1_000_000)
    record = json.loads((original / CLAIM_FILE).read_text())
    record["epochs"][STORE] = 2   # saved, then the process died before the store's put
    (original / CLAIM_FILE).write_text(json.dumps(record))
    _, again = _claim(store, original, now_ms=1_000_000 + LEASE_MS)
    assert again.epoch == 3


def test_a_damaged_claim_file_is_refused_naming_it(store, original):
    (original / CLAIM_FILE).write_text('{"data_dir_id": "nothex", "epochs": {}}')
    with pytest.raises(InvalidConfigError, match=CLAIM_FILE):
        new_start(original)


def test_a_corrupt_claim_object_is_corrupt_data_naming_its_key(store, original):
    start, _ = _claim(store, original)
    store.put(claim_key(start.data_dir_id), b"\x00garbage")
    with pytest.raises(CorruptDataError, match=claim_key(start.data_dir_id)):
        read_claim(store, start.data_dir_id)


def test_a_start_on_a_corrupt_claim_object_is_refused_unless_it_takes_the_store_over(
        store, original):
    # Given a claim object damaged in the store
    start, claim = _claim(store, original)
    store.put(claim_key(start.data_dir_id), b"\x00garbage")
    # Then a start is refused, naming the object and the option that replaces it
    later_ms = claim.lease_until_ms + 1
    with pytest.raises(InvalidConfigError, match=f"{claim_key(start.data_dir_id)} is not a "
                                                 f"Plinth tier claim.*--tier-store-take-over"):
        _claim(store, original, now_ms=later_ms)
    # And with --tier-store-take-over it claims the store again, one epoch up
    again_start, again = _claim(store, original, take_over=True, now_ms=later_ms)
    assert again.epoch == claim.epoch + 1
    assert read_claim(store, start.data_dir_id).instance_id == again_start.instance_id


def test_a_keeper_whose_claim_object_is_damaged_stops_renewing_and_says_why(store, original):
    start = new_start(original)
    keeper = ClaimKeeper(store, STORE, original, start, take_over=False)
    keeper.claim_at_start()
    try:
        assert keeper.state().held
        store.put(claim_key(start.data_dir_id), b"\x00garbage")
        assert not keeper.renew()
        state = keeper.state()
        assert not state.held
        assert f"NOT HELD: {store.url}/{claim_key(start.data_dir_id)} is not a Plinth " \
               f"tier claim" in state.line
        assert "--tier-store-take-over" in state.line
        assert store.get(claim_key(start.data_dir_id)) == b"\x00garbage"   # left as found
    finally:
        keeper.release()


def test_a_keeper_reports_its_state_at_once_and_says_held_with_epoch_and_lease(store, original):
    start = new_start(original)
    keeper = ClaimKeeper(store, STORE, original, start, take_over=False)
    keeper.claim_at_start()
    heard = []
    try:
        keeper.report_to(heard.append)
    finally:
        keeper.release()
    assert len(heard) == 1 and heard[0].held
    assert heard[0].line.startswith(f"held at epoch 1 in {STORE}, lease until 20")


def _keeper_on_an_unmounted_share(tmp_path) -> ClaimKeeper:
    """A keeper of ``tmp_path/data`` on the file:// store ``tmp_path/share``, moved away
    to ``tmp_path/unmounted`` (as a network share unmounted) after it was opened."""
    data_dir, root = tmp_path / "data", tmp_path / "share"
    data_dir.mkdir()
    root.mkdir()
    store = open_remote_store(f"file://{root}")
    root.rename(tmp_path / "unmounted")
    return ClaimKeeper(store, STORE, data_dir, new_start(data_dir), take_over=False)


def test_a_keeper_that_could_not_claim_at_start_says_so_with_the_stores_error(tmp_path):
    # Given a store that does not answer (a file:// store whose share was unmounted)
    keeper = _keeper_on_an_unmounted_share(tmp_path)
    keeper.claim_at_start()
    try:
        state = keeper.state()
    finally:
        keeper.release()
    # Then it does not hold the claim, and says what the store answered
    assert not state.held
    assert state.line.startswith("NOT HELD yet: RemoteStorage")
    assert "are not deleted until it is" in state.line


def test_unrelated_data_dirs_share_a_store_without_touching_each_others_claims(store, original,
                                                                               tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    first, _ = _claim(store, original)
    second, _ = _claim(store, other)
    assert first.data_dir_id != second.data_dir_id
    assert read_claim(store, first.data_dir_id).instance_id == first.instance_id
    assert read_claim(store, second.data_dir_id).instance_id == second.instance_id


def test_a_store_down_for_many_rounds_is_one_warning_and_its_return_one_line(tmp_path, caplog):
    # Given a keeper whose store did not answer at start (a share unmounted)
    keeper = _keeper_on_an_unmounted_share(tmp_path)
    caplog.set_level("INFO", logger="plinth.shards.tier.store_claim")
    try:
        keeper.claim_at_start()
        # When three more rounds find it down, then one finds it back
        for _ in range(3):
            keeper._one_round()
        (tmp_path / "unmounted").rename(tmp_path / "share")
        keeper._one_round()
        state = keeper.state()
    finally:
        keeper.release()
    # Then the log said it once, and once that it was claimed
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "could not be claimed for this data dir at start" in warnings[0].getMessage()
    assert any("claimed the tier store" in r.getMessage() for r in caplog.records)
    assert state.held


def test_a_claim_the_store_lost_is_written_again_at_the_next_renewal(store, original):
    # Given a keeper holding the claim
    start = new_start(original)
    keeper = ClaimKeeper(store, STORE, original, start, take_over=False)
    keeper.claim_at_start()
    try:
        # When the store loses the claim object (a bucket emptied, a store restored)
        store.delete(claim_key(start.data_dir_id))
        # Then the next renewal writes it again: no other start claimed it
        assert keeper.renew()
        assert read_claim(store, start.data_dir_id).instance_id == start.instance_id
        assert keeper.state().held
        ClaimFence(store, start.data_dir_id, start.instance_id).check()   # deletes go on
    finally:
        keeper.release()


@pytest.fixture
def hanging_s3(tmp_path, monkeypatch):
    """An S3 store (moto's server in a process of its own) that ``hang()`` stops with
    SIGSTOP: it accepts connections and never answers, as a hung store does. Yields
    (store, hang); the process is continued and ended after the test."""
    import os
    import signal
    import sys

    import boto3

    from tests.moto_s3 import REGION, env_for
    from tests.support import free_port, wait_until

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION,
                              aws_access_key_id="plinth-test",
                              aws_secret_access_key="plinth-test")

        def bucket_made() -> bool:
            try:
                client.create_bucket(Bucket="hang")
            except Exception:   # not listening yet
                return False
            return True

        wait_until(bucket_made, 60)
        for key, value in env_for(port).items():
            monkeypatch.setenv(key, value)
        yield open_remote_store("s3://hang/plinth"), lambda: os.kill(server.pid, signal.SIGSTOP)
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.terminate()
        server.wait(30)


def test_a_start_and_a_stop_wait_a_bounded_time_for_a_store_that_hangs(hanging_s3, tmp_path,
                                                                     caplog):
    import time

    store, hang = hanging_s3
    bound_s = limits.TIER_CLAIM_START_WAIT_S + limits.TIER_CLAIM_RELEASE_WAIT_S
    # Given a store that hangs before a broker's start (it accepts, never answers)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    hang()
    keeper = ClaimKeeper(store, STORE, data_dir, new_start(data_dir), take_over=False)
    # When the broker claims it at start, then stops
    started_s = time.monotonic()
    keeper.claim_at_start()
    start_s = time.monotonic() - started_s
    state = keeper.state()
    started_s = time.monotonic()
    keeper.release()
    stop_s = time.monotonic() - started_s
    # Then the start went on after its wait, saying so, not the store's 30 s timeout
    assert limits.TIER_CLAIM_START_WAIT_S <= start_s < bound_s, start_s
    assert not state.held and "waiting for the store to answer" in state.line
    assert any(f"did not answer this data dir's claim within "
               f"{limits.TIER_CLAIM_START_WAIT_S:.0f} s" in r.getMessage()
               for r in caplog.records)
    # And the stop did not wait for the store either (nothing was claimed to release)
    assert stop_s < bound_s, stop_s


def test_a_stop_leaves_the_lease_to_run_out_when_the_store_hangs(hanging_s3, tmp_path, caplog):
    import time

    store, hang = hanging_s3
    # Given a broker holding the claim on a store that then hangs
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    keeper = ClaimKeeper(store, STORE, data_dir, new_start(data_dir), take_over=False)
    keeper.claim_at_start()
    assert keeper.state().held
    hang()
    # When it stops
    started_s = time.monotonic()
    keeper.release()
    stop_s = time.monotonic() - started_s
    # Then it waited at most its release wait, and said the lease runs out by itself
    assert stop_s < limits.TIER_CLAIM_RELEASE_WAIT_S + 2, stop_s
    assert any("lease could not be released" in r.getMessage() for r in caplog.records)
