"""Tiered storage's configuration on a real broker (issue 14, first slice): the server
options ``--tier-url`` and ``--tier-cache-bytes`` reach the shard actors, and the topic
configs remote.storage.enable and local.retention.* are checked by the controller and
shown by ``plinth topic describe``. Nothing is uploaded yet."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import Broker
from tests.support import unique_topic

PLINTH = [sys.executable, "-m", "plinth.cli"]


def plinth(url: str, *args: str, timeout_s: float = 120):
    env = dict(os.environ, PLINTH_BROKER=url)
    return subprocess.run(PLINTH + list(args), capture_output=True, text=True, env=env,
                          timeout=timeout_s)


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


def test_a_broker_with_tiered_topics_refuses_to_start_without_its_tier_url(
        broker_factory, ray_cluster, tmp_path):
    # Given a broker with a tiered topic, stopped
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
            f"started without --tier-url") in served.stderr
    assert "ready" not in served.stdout
