"""The ``plinth`` command line against a real broker, and the embedded ``plinth serve``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from plinth import Admin, Producer, limits
from tests.support import (free_port, processes_naming, start_until_ready, unique_topic,
                           wait_until)

PLINTH = [sys.executable, "-m", "plinth.cli"]


def plinth(url: str, *args: str, stdin: str | None = None, timeout_s: float = 120):
    env = dict(os.environ, PLINTH_BROKER=url)
    return subprocess.run(PLINTH + list(args), input=stdin, capture_output=True, text=True,
                          env=env, timeout=timeout_s)


def test_topic_commands_create_list_describe_and_delete(shared_broker):
    topic = unique_topic("cli")
    created = plinth(shared_broker.url, "topic", "create", topic, "--partitions", "3")
    assert created.returncode == 0, created.stderr
    assert topic in plinth(shared_broker.url, "topic", "list").stdout.split()
    described = plinth(shared_broker.url, "topic", "describe", topic)
    assert described.returncode == 0, described.stderr
    rows = [line.split() for line in described.stdout.splitlines()[2:]]
    assert [row[0] for row in rows] == ["0", "1", "2"]
    assert all(row[1].startswith("shard-") for row in rows)
    assert plinth(shared_broker.url, "topic", "delete", topic).returncode == 0
    assert topic not in plinth(shared_broker.url, "topic", "list").stdout.split()


def test_produce_reads_lines_and_consume_prints_them_with_keys(shared_broker):
    topic = unique_topic("cli")
    plinth(shared_broker.url, "topic", "create", topic, "--partitions", "1")
    lines = "".join(f"k{i}:value {i}\n" for i in range(50))
    produced = plinth(shared_broker.url, "produce", topic, "--key-separator", ":", stdin=lines)
    assert produced.returncode == 0, produced.stderr
    consumed = plinth(shared_broker.url, "consume", topic, "--from-beginning", "--max-messages", "50",
                      "--print-key", "--timeout-ms", "20000")
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == [f"k{i}\tvalue {i}" for i in range(50)]


def test_consume_prints_an_absent_key_or_value_as_null_and_an_empty_one_as_nothing(
        shared_broker):
    # Given records without a key, with an empty key, and a tombstone (no value)
    topic = unique_topic("cli")
    plinth(shared_broker.url, "topic", "create", topic, "--partitions", "1")
    with Producer(broker=shared_broker.url) as producer:
        for key, value in ((None, b"v0"), (b"", b"v1"), (b"k2", None), (b"k3", b"")):
            producer.send(topic, value, key=key, partition=0)
        producer.flush()
    # When they are consumed with their keys, Then absent reads as Kafka's console
    # consumer prints it, and empty as nothing: a tombstone is told from an empty value
    consumed = plinth(shared_broker.url, "consume", topic, "--from-beginning", "--print-key",
                      "--max-messages", "4", "--timeout-ms", "20000")
    assert consumed.stdout.splitlines() == ["null\tv0", "\tv1", "k2\tnull", "k3\t"]


def test_consume_from_an_offset_exits_after_the_timeout_without_new_data(shared_broker):
    topic = unique_topic("cli")
    plinth(shared_broker.url, "topic", "create", topic, "--partitions", "2")
    plinth(shared_broker.url, "produce", topic, "--partition", "1", stdin="a\nb\nc\n")
    consumed = plinth(shared_broker.url, "consume", topic, "--partition", "1", "--offset", "1",
                      "--timeout-ms", "1500")
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == ["b", "c"]


def test_cli_errors_exit_nonzero_with_one_clear_line(shared_broker):
    missing = plinth(shared_broker.url, "produce", "no-such-topic", stdin="x\n")
    assert missing.returncode != 0
    assert "UnknownTopicError" in missing.stderr and "no-such-topic" in missing.stderr
    bad = plinth(shared_broker.url, "topic", "create", "bad name!", "--partitions", "1")
    assert bad.returncode != 0 and "InvalidTopicError" in bad.stderr
    nobroker = plinth(f"tcp://127.0.0.1:{free_port()}", "--request-timeout-ms", "1000", "topic", "list")
    assert nobroker.returncode != 0 and "no reply" in nobroker.stderr


def test_embedded_serve_starts_its_own_ray_serves_and_exits_cleanly_on_sigterm(tmp_path):
    # Given `plinth serve` with no --ray-address (embedded Ray, all on loopback)
    url = f"tcp://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path / "home")   # proves nothing is written to ~/.ray
    proc, output = start_until_ready(PLINTH + ["serve", "--data-dir", str(tmp_path / "d"),
                                               "--listen", url, "--shards", "1"],
                                     "ready", timeout_s=180, env=env)
    try:
        # When a topic is created and used through the CLI
        topic = unique_topic("emb")
        assert plinth(url, "topic", "create", topic).returncode == 0
        assert plinth(url, "produce", topic, stdin="hello\n").returncode == 0
        consumed = plinth(url, "consume", topic, "--from-beginning", "--max-messages", "1")
        assert consumed.stdout == "hello\n", consumed.stderr
    finally:
        proc.terminate()
        code = proc.wait(120)
    # Then SIGTERM ends it with status 0, and Ray's token stayed in the data dir, out
    # of Ray's session directory and readable by this user only; the session
    # directory is this user's alone too (Ray made it writable by everyone)
    assert code == 0, "".join(output[-30:])
    token = tmp_path / "d" / "ray.auth_token"
    assert (token.stat().st_mode & 0o777, token.stat().st_uid) == (0o600, os.geteuid())
    assert (tmp_path / "d" / "ray").stat().st_mode & 0o777 == 0o700
    assert not (tmp_path / "home" / ".ray").exists()


def test_serve_whose_every_process_gets_sigterm_at_once_exits_in_bounded_time_losing_nothing(
        tmp_path):
    # Given an embedded broker in a process group of its own (Ray's GCS and raylet are
    # in it too), holding acknowledged records
    url = f"tcp://127.0.0.1:{free_port()}"
    cmd = PLINTH + ["serve", "--data-dir", str(tmp_path / "d"), "--listen", url, "--shards", "1"]
    proc, output = start_until_ready(cmd, "ready", timeout_s=180, start_new_session=True)
    topic = unique_topic("grp-stop")
    try:
        assert plinth(url, "topic", "create", topic).returncode == 0
        lines = "".join(f"r{i}\n" for i in range(100))
        assert plinth(url, "produce", topic, stdin=lines).returncode == 0
    finally:
        # When the whole group gets SIGTERM, as systemd's default stop sends it
        os.killpg(proc.pid, signal.SIGTERM)
    # Then the server exits within its shutdown grace period (it waited 60 s on a Ray
    # that was stopping too), and nothing of it is left running
    code = proc.wait(limits.SHUTDOWN_GRACE_PERIOD_S)
    assert code == 0, "".join(output[-30:])
    wait_until(lambda: not processes_naming(str(tmp_path / "d")), 60)
    # And a new server on the same data dir serves every acknowledged record
    proc, output = start_until_ready(cmd, "ready", timeout_s=180)
    try:
        consumed = plinth(url, "consume", topic, "--from-beginning", "--max-messages", "100",
                          "--timeout-ms", "20000")
        assert consumed.stdout.splitlines() == [f"r{i}" for i in range(100)], consumed.stderr
    finally:
        proc.terminate()
        assert proc.wait(120) == 0, "".join(output[-30:])


def test_group_commands_describe_lag_and_reset_offsets(shared_broker):
    topic, group = unique_topic("cli"), unique_topic("grp")
    plinth(shared_broker.url, "topic", "create", topic, "--partitions", "2")
    plinth(shared_broker.url, "produce", topic, "--partition", "0", stdin="a\nb\nc\nd\n")
    # A group member reads two records and commits on exit
    consumed = plinth(shared_broker.url, "consume", topic, "--group", group, "--from-beginning",
                      "--max-messages", "4", "--timeout-ms", "20000")
    assert consumed.returncode == 0, consumed.stderr
    assert sorted(consumed.stdout.split()) == ["a", "b", "c", "d"]
    assert group in plinth(shared_broker.url, "group", "list").stdout.split()
    described = plinth(shared_broker.url, "group", "describe", group)
    assert described.returncode == 0, described.stderr
    rows = {tuple(line.split()[:2]): line.split() for line in described.stdout.splitlines()
            if line.startswith(topic)}
    assert rows[(topic, "0")][2:5] == ["4", "4", "0"]       # committed, end, lag
    # Resetting to the earliest offset makes all four records lag again
    reset = plinth(shared_broker.url, "group", "reset", group, "--topic", topic, "--to-earliest")
    assert reset.returncode == 0, reset.stderr
    described = plinth(shared_broker.url, "group", "describe", group)
    row = next(line.split() for line in described.stdout.splitlines() if line.startswith(f"{topic} "))
    assert row[2:5] == ["0", "4", "4"]
    # An offset past a partition's end is set to its end, with a warning naming both
    # (it was stored as given: lag -9223372036854775803)
    reset = plinth(shared_broker.url, "group", "reset", group, "--topic", topic, "--to-offset",
                   "9223372036854775807")
    assert reset.returncode == 0, reset.stderr
    assert (f"warning: {topic}-0 holds offsets 0..4: 9223372036854775807 is outside them, so "
            f"the group's offset is set to 4") in reset.stderr
    described = plinth(shared_broker.url, "group", "describe", group)
    rows = {line.split()[1]: line.split()[2:5] for line in described.stdout.splitlines()
            if line.startswith(f"{topic} ")}
    assert rows == {"0": ["4", "4", "0"], "1": ["0", "0", "0"]}
    # Deleting the group forgets its offsets: a new member starts from auto_offset_reset
    deleted = plinth(shared_broker.url, "group", "delete", group)
    assert (deleted.returncode, deleted.stdout) == (0, f"deleted group {group}\n"), deleted.stderr
    assert group not in plinth(shared_broker.url, "group", "list").stdout.split()
    again = plinth(shared_broker.url, "group", "delete", group)
    assert again.returncode == 1 and f"UnknownGroupError: group {group!r}" in again.stderr


def test_a_group_with_a_member_is_not_deleted(shared_broker):
    from plinth import Consumer
    from plinth.errors import GroupNotEmptyError

    topic, group = unique_topic("cli"), unique_topic("grp")
    plinth(shared_broker.url, "topic", "create", topic)
    plinth(shared_broker.url, "produce", topic, stdin="x\n")
    with Consumer(topic, broker=shared_broker.url, group=group,
                  auto_offset_reset="earliest") as member:
        got = []
        wait_until(lambda: got.extend(r for rs in member.poll(timeout_ms=200).values()
                                      for r in rs) or got)
        member.commit()
        refused = plinth(shared_broker.url, "group", "delete", group)
        assert refused.returncode == 1
        assert "GroupNotEmptyError" in refused.stderr and "1 active member;" in refused.stderr
        with Admin(broker=shared_broker.url) as admin:
            with pytest.raises(GroupNotEmptyError):
                admin.delete_group(group)
    # Once it has left, the group (and the offsets it committed) can go
    with Admin(broker=shared_broker.url) as admin:
        admin.delete_group(group)


def test_group_delete_offsets_deletes_a_partitions_offset_and_says_why_it_cannot(shared_broker):
    from plinth import Consumer

    # Given a group without members with offsets of both partitions of a topic
    topic, group = unique_topic("cli"), unique_topic("grp")
    plinth(shared_broker.url, "topic", "create", topic, "--partitions", "2")
    with Admin(broker=shared_broker.url) as admin:
        admin.reset_group_offsets(group, {(topic, 0): 0, (topic, 1): 0})
    # When partition 0's is deleted / Then it is said, and only partition 1's is left
    deleted = plinth(shared_broker.url, "group", "delete-offsets", group, "--topic", topic,
                     "--partition", "0")
    assert (deleted.returncode, deleted.stdout) == (0, f"{group} {topic}-0: deleted (was 0)\n"), \
        deleted.stderr
    with Admin(broker=shared_broker.url) as admin:
        assert admin.describe_group(group).committed == {(topic, 1): 0}
    # And deleting it again says there was none, rather than "deleted" again
    again = plinth(shared_broker.url, "group", "delete-offsets", group, "--topic", topic)
    assert (again.returncode, again.stdout) == (0, f"{group} {topic}-0: no committed offset\n"
                                                   f"{group} {topic}-1: deleted (was 0)\n"), \
        again.stderr
    with Admin(broker=shared_broker.url) as admin:
        admin.reset_group_offsets(group, {(topic, 1): 0})
    # And an unknown group, or topic, is one clear line and exit status 1
    unknown = plinth(shared_broker.url, "group", "delete-offsets", "nobody-here", "--topic", topic)
    assert unknown.returncode == 1
    assert "error: UnknownGroupError: group 'nobody-here' is not known" in unknown.stderr
    nope = plinth(shared_broker.url, "group", "delete-offsets", group, "--topic", "nope-x")
    assert nope.returncode == 1
    assert f"error: UnknownTopicError: group {group}: no offsets of topic 'nope-x' to " \
           f"delete: " in nope.stderr
    # And while a member subscribes to the topic, its offsets are kept, saying why
    with Consumer(topic, broker=shared_broker.url, group=group) as member:
        wait_until(lambda: member.poll(timeout_ms=200) is not None and member.assignment())
        kept = plinth(shared_broker.url, "group", "delete-offsets", group, "--topic", topic)
    assert kept.returncode == 1, kept.stdout
    assert f"{group} {topic}-1: kept: GroupSubscribedToTopicError: " in kept.stderr
    assert f"subscribed to topic {topic!r}; stop them first" in kept.stderr


def test_topic_alter_changes_config(shared_broker):
    topic = unique_topic("cli")
    plinth(shared_broker.url, "topic", "create", topic)
    altered = plinth(shared_broker.url, "topic", "alter", topic, "--config", "retention.ms=3600000")
    assert altered.returncode == 0, altered.stderr
    assert "retention.ms=3600000" in plinth(shared_broker.url, "topic", "describe", topic).stdout
    bad = plinth(shared_broker.url, "topic", "alter", topic, "--config", "retention.ms=soon")
    assert bad.returncode != 0 and "not an integer" in bad.stderr
    # --delete-config sets a key back to its default, as kafka-configs does
    deleted = plinth(shared_broker.url, "topic", "alter", topic, "--delete-config", "retention.ms")
    assert deleted.returncode == 0, deleted.stderr
    assert "retention.ms=604800000" in deleted.stdout
    unknown = plinth(shared_broker.url, "topic", "alter", topic, "--delete-config", "retention")
    assert unknown.returncode == 1 and "cannot delete unknown config retention;" in unknown.stderr


def test_shards_add_and_remove_print_the_moves_and_removing_the_last_shard_is_refused(broker_factory):
    broker = broker_factory(shards=1)
    topic = unique_topic("cli")
    plinth(broker.url, "topic", "create", topic, "--partitions", "8")
    added = plinth(broker.url, "shards", "add", "1")
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines()[-1].startswith("added 1 shard; ")
    assert all(" -> shard-1 from offset 0" in line for line in added.stdout.splitlines()[:-1])
    removed = plinth(broker.url, "shards", "remove", "1")
    assert removed.returncode == 0, removed.stderr
    assert len(removed.stdout.splitlines()) == len(added.stdout.splitlines())
    assert all(" shard-1 -> shard-0 from offset 0" in line for line in removed.stdout.splitlines()[:-1])
    last = plinth(broker.url, "shards", "remove", "1")
    assert last.returncode != 0
    assert "cannot remove 1 of 1 shards: at least one must stay" in last.stderr


def test_a_request_header_over_the_limit_is_refused_at_once_in_one_line(shared_broker):
    # Given a topic config whose key alone is over the 64 KiB header limit
    key = "k" * (limits.HEADER_BYTES_MAX + 1)
    # When the CLI is asked to create a topic with it, with a long request timeout
    created = plinth(shared_broker.url, "--request-timeout-ms", "600000", "topic", "create",
                     unique_topic("big"), "--config", f"{key}=1", timeout_s=60)
    # Then it fails at once (not after the request timeout), in one line naming the limit
    assert created.returncode == 1
    assert created.stderr.startswith("error: RequestTooLargeError: request header is ")
    assert f"over the limit of {limits.HEADER_BYTES_MAX} bytes (64 KiB)" in created.stderr
    assert len(created.stderr.splitlines()) == 1


@pytest.mark.parametrize("option", ["--listen", "--metrics-port", "--kafka-listen"])
def test_serve_on_a_port_in_use_exits_1_in_one_error_line_naming_the_option(tmp_path, option):
    # Given a port something else listens on
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        given = {"--listen": f"tcp://127.0.0.1:{port}", "--metrics-port": str(port),
                 "--kafka-listen": f"127.0.0.1:{port}"}[option]
        listen = [] if option == "--listen" else ["--listen", f"tcp://127.0.0.1:{free_port()}"]
        # When plinth serve is told to listen there too
        served = subprocess.run(PLINTH + ["serve", "--data-dir", str(tmp_path / "d"), "--shards",
                                          "1", "--console-listen", "off", option, given] + listen,
                                capture_output=True, text=True, timeout=180)
    # Then it exits 1, its last line naming the option, the value and why; no traceback
    assert served.returncode == 1, served.stderr
    last = served.stderr.splitlines()[-1]
    assert last.startswith(f"error: InvalidConfigError: {option} {given}: "), served.stderr
    assert "ddress already in use" in last
    assert "Traceback" not in served.stderr
    # And it found it before it created anything: no data dir whose metadata.json would
    # pin the shard count of a corrected retry, and no Ray (nothing to stop)
    assert not (tmp_path / "d").exists(), served.stderr
    wait_until(lambda: not processes_naming(str(tmp_path / "d")), 60)


def test_an_invalid_group_name_is_said_once(shared_broker):
    topic = unique_topic("cli")
    plinth(shared_broker.url, "topic", "create", topic)
    consumed = plinth(shared_broker.url, "consume", topic, "--group", "bad group",
                      "--timeout-ms", "5000")
    assert consumed.returncode == 1
    assert consumed.stderr == ("error: InvalidGroupError: group name 'bad group' must be 1 to "
                               f"{limits.GROUP_NAME_BYTES_MAX} bytes of printable ASCII without "
                               "spaces or '/', and not '.' or '..'\n")


def test_produce_stops_at_a_line_without_the_separator_saying_how_many_were_produced(
        shared_broker):
    topic = unique_topic("cli")
    plinth(shared_broker.url, "topic", "create", topic)
    produced = plinth(shared_broker.url, "produce", topic, "--key-separator", ":",
                      stdin="k:v1\nk:v2\nnokey\nk:v4\n")
    assert produced.returncode == 1
    assert produced.stderr == ("error: line 3 has no key separator ':'; the 2 records before "
                               "it were produced\n")
    consumed = plinth(shared_broker.url, "consume", topic, "--from-beginning", "--print-key",
                      "--max-messages", "2", "--timeout-ms", "20000")
    assert consumed.stdout.splitlines() == ["k\tv1", "k\tv2"]
    with Admin(broker=shared_broker.url) as admin:
        assert admin.list_offsets(topic, 0).end_offset == 2


def test_produce_with_default_batches_fits_kafkas_default_max_message_bytes(shared_broker):
    # Given a topic with Kafka's default max.message.bytes (1 MiB + 12)
    topic = unique_topic("cli")
    plinth(shared_broker.url, "topic", "create", topic, "--config", "max.message.bytes=1048588")
    # When 100,000 lines of 108 bytes are produced with the default batches (full ones
    # encoded to 1 MiB + 80 bytes, and were refused from the tenth thousand on)
    lines = 100_000
    produced = plinth(shared_broker.url, "produce", topic,
                      stdin="".join("%08d%s\n" % (i, "z" * 100) for i in range(lines)))
    # Then every one is in the topic
    assert produced.returncode == 0, produced.stderr
    with Admin(broker=shared_broker.url) as admin:
        assert admin.list_offsets(topic, 0).end_offset == lines


def produce_process(url: str, topic: str) -> subprocess.Popen:
    """``plinth produce TOPIC`` reading a pipe the test writes to (and stderr to read)."""
    return subprocess.Popen(PLINTH + ["--broker", url, "produce", topic], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_produce_says_a_failed_record_while_stdin_is_still_open(shared_broker):
    # Given plinth produce reading a pipe, whose first record is in the topic
    topic = unique_topic("cli")
    plinth(shared_broker.url, "topic", "create", topic)
    proc = produce_process(shared_broker.url, topic)
    try:
        proc.stdin.write(b"first\n")
        proc.stdin.flush()
        with Admin(broker=shared_broker.url) as admin:
            wait_until(lambda: admin.list_offsets(topic, 0).end_offset == 1)
            # When the topic is deleted, and lines keep coming (as from tail -f)
            admin.delete_topic(topic)

        def wrote_a_line_or_exited() -> bool:
            try:
                proc.stdin.write(b"more\n")
                proc.stdin.flush()
            except BrokenPipeError:   # it exited
                return True
            return proc.poll() is not None

        wait_until(wrote_a_line_or_exited, 60)
        # Then it exits 1 at once, saying why, without waiting for the end of stdin
        assert proc.wait(60) == 1
        assert proc.stderr.read().decode().splitlines()[-1] == \
            f"error: UnknownTopicError: unknown topic {topic!r}"
    finally:
        proc.kill()
        proc.wait()


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    return int(kib) * 1024


def test_produce_holds_nothing_per_record_however_long_stdin_runs(shared_broker):
    # Given plinth produce reading a pipe, fed 100,000 lines at a time, each lot once the
    # one before is in the topic (so the producer's own buffer never holds a backlog)
    topic, lot = unique_topic("cli"), 100_000
    plinth(shared_broker.url, "topic", "create", topic)
    proc = produce_process(shared_broker.url, topic)
    peaks = []
    try:
        with Admin(broker=shared_broker.url) as admin:
            for n in range(6):
                proc.stdin.write(b"".join(b"record %d\n" % i for i in range(n * lot, (n + 1) * lot)))
                proc.stdin.flush()
                wait_until(lambda: admin.list_offsets(topic, 0).end_offset == (n + 1) * lot, 120)
                peaks.append(peak_rss_bytes(proc.pid))
        proc.stdin.close()
        assert proc.wait(120) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    # Then 500,000 records more cost it no more memory (a future kept per record grew
    # it by 27 MiB)
    assert peaks[-1] - peaks[0] < 8 * 1024 * 1024, peaks


@pytest.mark.parametrize("config, why", [
    ("foo=1", "unknown config foo;"),
    ("retention.ms=soon", "not an integer"),
    ("no-equals-sign", "'no-equals-sign' is not KEY=VALUE"),
])
def test_topic_alter_with_a_bad_config_does_not_grow_the_topic(shared_broker, config, why):
    # Given a topic of one partition
    topic = unique_topic("cli")
    plinth(shared_broker.url, "topic", "create", topic)
    # When it is altered to three partitions with a config the broker refuses
    altered = plinth(shared_broker.url, "topic", "alter", topic, "--partitions", "3",
                     "--config", config)
    # Then the alter fails saying why, and the topic still has one partition
    assert altered.returncode != 0 and why in altered.stderr, altered.stderr
    with Admin(broker=shared_broker.url) as admin:
        assert admin.describe_topic(topic).partitions == 1


@pytest.mark.parametrize("count, why", [
    ("2", "already has 2 partitions; 2 requested: ask for more than 2 to add partitions"),
    ("1", "has 2 partitions; 1 requested: partitions can only be added"),
    ("1000000", "1000000 partitions requested; a topic has 1 to"),
])
def test_topic_alter_to_a_count_the_topic_cannot_grow_to_leaves_its_config_alone(
        shared_broker, count, why):
    # Given a topic of two partitions
    topic = unique_topic("cli")
    plinth(shared_broker.url, "topic", "create", topic, "--partitions", "2")
    # When it is altered with a good config and a count it cannot grow to
    altered = plinth(shared_broker.url, "topic", "alter", topic, "--partitions", count,
                     "--config", "retention.ms=3600000")
    # Then the alter fails saying why, and changed neither the count nor the config
    assert altered.returncode == 1 and why in altered.stderr, altered.stderr
    with Admin(broker=shared_broker.url) as admin:
        info = admin.describe_topic(topic)
    assert info.partitions == 2 and info.config["retention.ms"] != "3600000"


def test_topic_alter_changes_the_config_and_grows_the_topic_together(shared_broker):
    topic = unique_topic("cli")
    plinth(shared_broker.url, "topic", "create", topic)
    altered = plinth(shared_broker.url, "topic", "alter", topic, "--partitions", "3",
                     "--config", "retention.ms=3600000")
    assert altered.returncode == 0, altered.stderr
    assert altered.stdout.splitlines()[-1] == f"topic {topic} has 3 partitions"
    with Admin(broker=shared_broker.url) as admin:
        info = admin.describe_topic(topic)
    assert (info.partitions, info.config["retention.ms"]) == (3, "3600000")
