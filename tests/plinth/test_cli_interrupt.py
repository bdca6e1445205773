"""Ctrl-C on a plinth command: exit status 130 (128 + SIGINT, as a shell reports it),
one "interrupted" line, and for a consume how many records it printed; not click's
"Aborted!" with the failure status 1. A real `plinth consume` process, signalled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from plinth.client.admin import Admin
from plinth.client.producer import Producer


# Unbuffered (PYTHONUNBUFFERED=1, as CI's environment has it) the write shows a record to
# the reader; buffered, the flush after it does: the count must be right either way.
@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["unbuffered", "buffered"])
def test_ctrl_c_on_a_tailing_consume_exits_130_saying_how_many_records_it_printed(
        shared_broker, unbuffered):
    # Given a topic of three records, and a consume tailing it with no timeout
    topic = "interrupted-unbuffered" if unbuffered else "interrupted-buffered"
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(topic, 1)
    with Producer(broker=shared_broker.url) as producer:
        for value in (b"a", b"b", b"c"):
            producer.send(topic, value, partition=0)
    consume = subprocess.Popen(
        [sys.executable, "-m", "plinth.cli", "--broker", shared_broker.url, "consume",
         topic, "--from-beginning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        # (as a terminal's Ctrl-C: a child of a test runner may inherit SIGINT ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # When it has printed the three, and Ctrl-C comes
        printed = [consume.stdout.readline() for _ in range(3)]
        consume.send_signal(signal.SIGINT)
        _, stderr = consume.communicate(timeout=60)
    finally:
        consume.kill()
    # Then it exits 130, saying what it printed, not "Aborted!"
    assert printed == [b"a\n", b"b\n", b"c\n"]
    assert consume.returncode == 130, stderr
    assert stderr.decode().splitlines()[-2:] == ["3 records printed", "interrupted"]


def test_a_consume_whose_reader_goes_away_exits_quietly_as_sigpipe_ends_a_command(shared_broker):
    # Given a topic of more records than a pipe holds
    topic = "read-by-head"
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(topic, 1)
    with Producer(broker=shared_broker.url) as producer:
        for n in range(2_000):
            producer.send(topic, b"%04d" % n + b"x" * 1_000, partition=0)
    consume = subprocess.Popen(
        [sys.executable, "-m", "plinth.cli", "--broker", shared_broker.url, "consume",
         topic, "--from-beginning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # When its reader takes one line and closes the pipe, as `| head -1` does
        first = consume.stdout.readline()
        consume.stdout.close()
        _, stderr = consume.communicate(timeout=60)
    finally:
        consume.kill()
    # Then it exits 141 (128 + SIGPIPE), as `cat` ended by the signal does, saying nothing:
    # the reader had what it wanted (click's bare status 1 said nothing either, as a failure)
    assert first.startswith(b"0000x")
    assert consume.returncode == 141, stderr
    assert stderr == b""
