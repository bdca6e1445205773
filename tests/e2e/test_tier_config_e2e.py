"""Tiered storage's configuration on a real broker (issue 14): the server options
``--tier-url`` and ``--tier-cache-bytes`` reach the shard actors, and the topic configs
remote.storage.enable and local.retention.* are checked by the controller and shown by
``plinth topic describe``, with each partition's local and remote offsets and bytes.
Wrong calls fail at once with one clear line: memory:// as a server's store, a restart
on another store than the tiered topics', a ``plinth router`` naming another store than
its broker's. After the uploader has run, describe shows the remote log below the local
log start. A copy of a tiered data dir never runs beside its original, and status and
the metrics say whether the server holds its store's claim."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from plinth import Admin, Producer, protocol
from plinth.shards.tier.remote_store import open_remote_store
from plinth.shards.tier.remote_transfer import list_remote_segments
from tests.conftest import Broker
from tests.support import (
    free_port, start_until_ready, topic_id_in, unique_topic, wait_until)

MiB = 1 << 20

PLINTH = [sys.executable, "-m", "plinth.cli"]


def plinth(url: str, *args: str, stdin: str | None = None, timeout_s: float = 120):
    env = dict(os.environ, PLINTH_BROKER=url)
    return subprocess.run(PLINTH + list(args), capture_output=True, text=True, env=env,
                          input=stdin, timeout=timeout_s)


def described_config(url: str, topic: str) -> dict[str, str]:
    """The KEY=VALUE pairs of ``plinth topic describe``'s first line."""
    described = plinth(url, "topic", "describe", topic)
    assert described.returncode == 0, described.stderr
    first = described.stdout.splitlines()[0]
    return dict(word.split("=", 1) for word in first.split() if "=" in word)


def test_without_a_tier_url_a_topic_with_remote_storage_is_refused_naming_the_option(
        broker_factory):
    # Given a broker started without --tier-url
    broker = broker_factory(shards=1)
    topic = unique_topic("tier")
    # When a topic with remote storage is created
    created = plinth(broker.url, "topic", "create", topic,
                     "--config", "remote.storage.enable=true")
    # Then it fails with one line naming the config and the missing option
    assert created.returncode == 1
    assert "InvalidConfigError" in created.stderr and "--tier-url" in created.stderr
    assert f"topic '{topic}': remote.storage.enable=true needs tiered storage" in created.stderr
    assert topic not in plinth(broker.url, "topic", "list").stdout.split()
    # And a topic without it shows Kafka's defaults
    assert plinth(broker.url, "topic", "create", topic).returncode == 0
    config = described_config(broker.url, topic)
    assert (config["remote.storage.enable"], config["local.retention.ms"],
            config["local.retention.bytes"]) == ("false", "-2", "-2")


def test_with_a_file_tier_url_remote_storage_is_taken_shown_and_cannot_be_turned_off(
        broker_factory, tmp_path):
    # Given a broker with a file:// store whose URL carries a (made-up) secret query
    tier_dir = tmp_path / "tier"
    tier_dir.mkdir()
    broker = broker_factory(shards=1, extra_args=(
        "--tier-url", f"file://{tier_dir}?token=s3cr3t", "--tier-cache-bytes", "67108864"))
    topic = unique_topic("tier")
    # When a topic is created with remote storage and a local retention within retention
    created = plinth(broker.url, "topic", "create", topic, "--partitions", "2",
                     "--config", "remote.storage.enable=true",
                     "--config", "retention.ms=604800000", "--config", "local.retention.ms=3600000")
    assert created.returncode == 0, created.stderr
    # Then describe shows the configs
    config = described_config(broker.url, topic)
    assert (config["remote.storage.enable"], config["local.retention.ms"],
            config["local.retention.bytes"]) == ("true", "3600000", "-2")
    # And turning remote storage off is refused, saying why
    disabled = plinth(broker.url, "topic", "alter", topic,
                      "--config", "remote.storage.enable=false")
    assert disabled.returncode == 1
    assert "remote.storage.enable cannot go from true back to false" in disabled.stderr
    assert "remote.log.delete.on.disable" in disabled.stderr
    assert described_config(broker.url, topic)["remote.storage.enable"] == "true"
    # And a local retention beyond retention is refused, naming both keys and values
    beyond = plinth(broker.url, "topic", "alter", topic, "--config", "local.retention.ms=-1")
    assert beyond.returncode == 1
    assert "local.retention.ms=-1 (keep everything locally) exceeds retention.ms=604800000" \
        in beyond.stderr
    # And the shard actor started with the tier options (its log says so), and no log
    # of the server or the shard shows the URL's secret
    shard_log = (broker.data_dir / "logs" / "shard-0.log").read_text()
    assert f"tiered storage in file://{tier_dir}?***, cache of 67108864 bytes" in shard_log
    assert "s3cr3t" not in shard_log and "s3cr3t" not in broker.log()
    assert "s3cr3t" not in (broker.data_dir / "logs" / "controller.log").read_text()


def test_plinth_serve_with_an_unusable_tier_url_exits_at_once_naming_it(tmp_path):
    # Given a URL no object store takes, with a password in it
    # When plinth serve starts with it (no Ray is started: the check comes first)
    served = subprocess.run(PLINTH + ["serve", "--data-dir", str(tmp_path / "d"), "--tier-url",
                                      "s3:/user:s3cr3t@bucket"], capture_output=True,
                            text=True, timeout=60)
    # Then it exits with one line naming the option and the URL, its secret masked
    assert served.returncode == 1
    assert "error: InvalidConfigError: --tier-url" in served.stderr
    assert "cannot be used" in served.stderr and "s3cr3t" not in served.stderr + served.stdout
    assert not (tmp_path / "d").exists()


def tiered_table(url: str, topic: str) -> dict[int, list[str]]:
    """partition -> the words of its row in ``plinth topic describe``'s tiered-storage table."""
    described = plinth(url, "topic", "describe", topic)
    assert described.returncode == 0, described.stderr
    lines = described.stdout.splitlines()
    at = lines.index("tiered storage")
    assert lines[at + 1].split() == ["partition", "local", "start", "local", "bytes", "remote",
                                     "start", "remote", "end", "remote", "bytes"]
    rows = {}
    for line in lines[at + 2:]:   # (lines saying why a remote log is unknown may follow)
        if not line.split()[0].isdigit():
            break
        rows[int(line.split()[0])] = line.split()
    return rows


def test_a_tiered_topics_describe_shows_local_and_remote_offsets_and_a_router_must_agree_on_the_store(
        broker_factory, ray_cluster, tmp_path):
    # Given a broker tiering to a file:// store, with a tiered topic holding 5 records in
    # partition 0 and none in partition 1, and an untiered topic
    cluster = unique_topic("cl")
    (tmp_path / "tier").mkdir()
    store = f"file://{tmp_path}/tier"
    broker = broker_factory(shards=1, extra_args=("--tier-url", store, "--cluster-name", cluster))
    topic, plain = unique_topic("tier"), unique_topic("plain")
    assert plinth(broker.url, "topic", "create", topic, "--partitions", "2",
                  "--config", "remote.storage.enable=true").returncode == 0
    assert plinth(broker.url, "topic", "create", plain).returncode == 0
    produced = plinth(broker.url, "produce", topic, "--partition", "0", stdin="a\nb\nc\nd\ne\n")
    assert produced.returncode == 0, produced.stderr
    # When they are described, once the shard has listed the store for each partition
    # (until its first upload pass has, describe says the remote log is unknown: "?")
    with Admin(broker=broker.url) as admin:
        def listed() -> list | None:
            infos = admin.describe_topic(topic).partition_info
            return None if any(p.remote_not_listed for p in infos) else infos
        infos = wait_until(listed, timeout_s=60,
                           explain=lambda: admin.describe_topic(topic).partition_info)
    rows = tiered_table(broker.url, topic)
    # Then each tiered partition's local start is its start (nothing is remote yet), its
    # local bytes its size, and it has no remote offsets and no remote bytes
    assert [(p.start_offset, p.local_start_offset, p.end_offset) for p in infos] == [
        (0, 0, 5), (0, 0, 0)]
    assert all(not p.has_remote and p.remote_bytes == 0 for p in infos)
    assert infos[0].size_bytes > 0 and infos[1].size_bytes == 0
    assert rows == {0: ["0", "0", str(infos[0].size_bytes), "-", "-", "0"],
                    1: ["1", "0", "0", "-", "-", "0"]}
    assert (infos[0].remote_start_offset, infos[0].remote_end_offset) == (
        protocol.NO_REMOTE_OFFSET, protocol.NO_REMOTE_OFFSET)
    # And an untiered topic's describe has no tiered-storage table
    assert "tiered storage" not in plinth(broker.url, "topic", "describe", plain).stdout
    # And a router given another store refuses to start, naming both
    router = [sys.executable, "-m", "plinth.cli", "router", "--ray-address", ray_cluster,
              "--cluster-name", cluster, "--listen", f"tcp://127.0.0.1:{free_port()}"]
    (tmp_path / "elsewhere").mkdir()
    refused = subprocess.run(router + ["--tier-url", f"file://{tmp_path}/elsewhere"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (f"error: InvalidConfigError: --tier-url names file://{tmp_path}/elsewhere, but the "
            f"broker {cluster!r} tiers to file://{tmp_path}/tier") in refused.stderr
    # And one given the broker's store (through PLINTH_TIER_URL, with a trailing "/") serves
    proc, _ = start_until_ready(router, "router ready",
                                env=dict(os.environ, PLINTH_TIER_URL=store + "/"))
    proc.terminate()
    assert proc.wait(60) == 0


def test_plinth_serve_refuses_a_memory_store_at_once_saying_why(tmp_path):
    # When plinth serve is given the unit tests' in-process store
    served = subprocess.run(PLINTH + ["serve", "--data-dir", str(tmp_path / "d"), "--tier-url",
                                      "memory://"], capture_output=True, text=True, timeout=60)
    # Then it exits before starting anything, saying why and what to use
    assert served.returncode == 1
    assert "error: InvalidConfigError: --tier-url 'memory://': memory:// is an in-process " \
           "store for unit tests" in served.stderr
    assert "loses every segment at exit" in served.stderr
    assert not (tmp_path / "d").exists()


def test_a_broker_with_tiered_topics_refuses_to_start_without_their_store_or_with_another(
        broker_factory, ray_cluster, tmp_path):
    # Given a broker with a tiered topic, stopped
    (tmp_path / "tier").mkdir()
    broker = broker_factory(shards=1, extra_args=("--tier-url", f"file://{tmp_path}/tier"))
    topic = unique_topic("tier")
    created = plinth(broker.url, "topic", "create", topic,
                     "--config", "remote.storage.enable=true")
    assert created.returncode == 0, created.stderr
    assert broker.stop() == 0
    # When it starts again on the same data dir without --tier-url
    again = Broker(broker.data_dir, ray_cluster, shards=1)
    served = subprocess.run(again.command(), capture_output=True, text=True, timeout=180)
    # Then it exits, naming the topic and the option, before serving anything
    assert served.returncode == 1, served.stdout + served.stderr
    assert (f"1 topic(s) have remote.storage.enable=true ({topic}) but the server was "
            f"started without --tier-url: start it with the --tier-url their remote segments "
            f"are in file://{tmp_path}/tier") in served.stderr
    assert "ready" not in served.stdout
    # And when it starts with another store, it exits naming both stores
    (tmp_path / "other").mkdir()
    other = Broker(broker.data_dir, ray_cluster, shards=1,
                   extra_args=("--tier-url", f"file://{tmp_path}/other"))
    served = subprocess.run(other.command(), capture_output=True, text=True, timeout=180)
    assert served.returncode == 1, served.stdout + served.stderr
    assert (f"1 topic(s) have remote.storage.enable=true ({topic}) and their remote segments "
            f"are in file://{tmp_path}/tier, but the server was started with --tier-url "
            f"file://{tmp_path}/other: start it with --tier-url file://{tmp_path}/tier") \
        in served.stderr
    assert "ready" not in served.stdout
    # ... having written nothing there (no claim of this data dir in the wrong store)
    assert list((tmp_path / "other").iterdir()) == []
    assert "file://" + str(tmp_path / "other") not in (broker.data_dir / "tier_claim.json").read_text()


def test_after_uploads_describe_shows_the_remote_log_below_the_local_start(
        broker_factory, tmp_path):
    # Given a broker with a file:// store and a tiered topic of 1 MiB segments keeping
    # 1 MiB locally, into which 5 MB is produced
    tier_dir = tmp_path / "tier"
    tier_dir.mkdir()
    broker = broker_factory(shards=1, extra_args=("--tier-url", f"file://{tier_dir}"))
    topic = unique_topic("tierdesc")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1, config={"segment.bytes": MiB, "remote.storage.enable": "true",
                                             "local.retention.bytes": MiB})
    with Producer(broker=broker.url, linger_ms=0) as producer:
        for n in range(160):
            producer.send(topic, b"%04d" % n + b"." * 32_000).get(30)

    # When the uploader has uploaded a prefix and local retention deleted part of it
    def described() -> protocol.PartitionInfo:
        with Admin(broker=broker.url) as admin:
            return admin.describe_topic(topic).partition_info[0]
    wait_until(lambda: described().local_start_offset > 0, timeout_s=60,
               explain=lambda: f"{described()}")
    info = described()
    remote = list_remote_segments(open_remote_store(f"file://{tier_dir}"), topic,
                                  topic_id_in(broker.data_dir, topic), 0)
    # Then describe shows the log from 0, the remote log from 0 to where the uploads end
    # (at or past the local start: nothing is missing between them), its bytes those of
    # the uploaded segments' logs, and the local start and bytes above it
    assert (info.start_offset, info.end_offset, info.remote_start_offset) == (0, 160, 0)
    assert info.local_start_offset <= info.remote_end_offset <= 160
    assert info.remote_end_offset <= max(s.end_offset for s in remote)
    assert 0 < info.remote_bytes <= sum(s.size_bytes for s in remote)
    assert MiB <= info.size_bytes <= 3 * MiB
    # And plinth topic describe prints the same numbers, or newer ones (the uploader runs on)
    row = tiered_table(broker.url, topic)[0]
    assert row[0] == "0" and row[3] == "0"
    assert int(row[1]) >= info.local_start_offset and int(row[4]) >= info.remote_end_offset
    assert int(row[5]) >= info.remote_bytes


def test_a_copy_of_a_tiered_data_dir_never_runs_beside_its_original_and_the_older_one_is_refused(
        broker_factory, ray_cluster, tmp_path):
    # Given a broker with a tiered topic, stopped and copied, and the copy started (a move)
    (tmp_path / "tier").mkdir()
    tier = ("--tier-url", f"file://{tmp_path}/tier")
    original = broker_factory(shards=1, extra_args=tier)
    created = plinth(original.url, "topic", "create", unique_topic("tier"),
                     "--config", "remote.storage.enable=true")
    assert created.returncode == 0, created.stderr
    assert original.stop() == 0
    copy_dir = tmp_path / "copy"
    shutil.copytree(original.data_dir, copy_dir, ignore=shutil.ignore_patterns("ray", "sockets"))
    copy = broker_factory(shards=1, data_dir=copy_dir, extra_args=tier)
    # When the original starts with the same store while the copy runs
    served = subprocess.run(Broker(original.data_dir, ray_cluster, shards=1,
                                   extra_args=tier).command(),
                            capture_output=True, text=True, timeout=180)
    # Then it exits at once, naming the running copy's data dir
    assert served.returncode == 1, served.stdout + served.stderr
    assert ("a running broker of a copy of this data dir claims them: data dir "
            f"{copy_dir.resolve()} on host") in served.stderr
    assert "ready" not in served.stdout
    # And once the copy has stopped, the original, now the older one, is still refused,
    # naming the copy and the way out
    assert copy.stop() == 0
    served = subprocess.run(Broker(original.data_dir, ray_cluster, shards=1,
                                   extra_args=tier).command(),
                            capture_output=True, text=True, timeout=180)
    assert served.returncode == 1, served.stdout + served.stderr
    assert f"was claimed since this data dir ({original.data_dir.resolve()} on host" \
        in served.stderr
    assert f"data dir {copy_dir.resolve()} on host" in served.stderr
    assert "--tier-store-take-over" in served.stderr and "ready" not in served.stdout
    # And with --tier-store-take-over it serves again, and the copy, taking it back
    # while the original runs, is refused
    broker_factory(shards=1, data_dir=original.data_dir,
                   extra_args=tier + ("--tier-store-take-over",))
    served = subprocess.run(Broker(copy_dir, ray_cluster, shards=1,
                                   extra_args=tier + ("--tier-store-take-over",)).command(),
                            capture_output=True, text=True, timeout=180)
    assert served.returncode == 1, served.stdout + served.stderr
    assert f"claims them: data dir {original.data_dir.resolve()} on host" in served.stderr


def test_status_and_the_metrics_say_whether_the_server_holds_its_tier_stores_claim(
        broker_factory, tmp_path):
    from tests.e2e.test_status_metrics_e2e import metric, scrape

    # Given a broker on a file:// tier store, with its metrics served
    (tmp_path / "tier").mkdir()
    metrics_port = free_port()
    broker = broker_factory(shards=1, extra_args=(
        "--tier-url", f"file://{tmp_path}/tier", "--metrics-port", str(metrics_port)))
    # Then status says it holds the claim, at its first epoch, and the metric is 1
    status = plinth(broker.url, "status")
    assert status.returncode == 0, status.stderr
    store = f"file://{tmp_path}/tier"
    assert f"tier store claim\n  held at epoch 1 in {store}, lease until 20" in status.stdout
    assert metric(scrape(metrics_port), "plinth_tier_store_claim_held", store=store) == 1
    # When its claim object in the store is damaged
    claims = list((tmp_path / "tier" / "_plinth" / "claims").iterdir())
    assert len(claims) == 1
    claims[0].write_bytes(b"\0garbage")
    # Then within a renewal, status says it no longer holds it, and why, and so does
    # the metric (its shards delete nothing in the store from then on)
    wait_until(lambda: "NOT HELD" in plinth(broker.url, "status").stdout, 60,
               explain=lambda: plinth(broker.url, "status").stdout)
    status = plinth(broker.url, "status", "--json")
    claim = json.loads(status.stdout)["tier_store_claim"]
    assert claim["held"] is False
    assert f"{claims[0].name} is not a Plinth tier claim" in claim["state"]
    assert "--tier-store-take-over" in claim["state"]
    assert metric(scrape(metrics_port), "plinth_tier_store_claim_held", store=store) == 0
