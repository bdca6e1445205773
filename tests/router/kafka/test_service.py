"""service.py's KafkaListenerOptions.check: what a Kafka listener needs before it
starts - TLS and SASL off loopback (unless --allow-insecure), SASL beside
CurveZMQ, both TLS files, files that load, --kafka-connections-max within its
bounds - each refusal naming what is missing; and the listener keeping that many."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from click.testing import CliRunner

from plinth import limits
from plinth.cli import main
from plinth.errors import InvalidConfigError
from plinth.router.kafka.sasl_users import add_user
from plinth.router.kafka.service import KafkaListenerOptions, KafkaService, security_summary
from tests.router.kafka.self_signed import self_signed_certificate
from tests.router.kafka.test_listener import closed_by_peer, connect


@pytest.fixture
def files(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    users = tmp_path / "users.json"
    add_user(users, "alice", "pw")
    return dict(tls_cert=cert, tls_key=key, sasl_users=users)


def test_a_loopback_listener_needs_nothing_and_a_non_loopback_one_needs_tls_and_sasl(files):
    KafkaListenerOptions("127.0.0.1:9092").check(router_has_keys=False)
    KafkaListenerOptions("0.0.0.0:9092", **files).check(router_has_keys=False)
    with pytest.raises(InvalidConfigError, match=r"without TLS \(--kafka-tls-cert, "
                                                 r"--kafka-tls-key\) and SASL"):
        KafkaListenerOptions("10.1.2.3:9092").check(router_has_keys=False)


def test_allow_insecure_lets_a_non_loopback_listener_run_without_tls_or_sasl():
    KafkaListenerOptions("0.0.0.0:9092", allow_insecure=True).check(router_has_keys=False)


def test_beside_curvezmq_sasl_is_needed_even_on_loopback_and_even_when_insecure_is_allowed(files):
    for options in (KafkaListenerOptions("127.0.0.1:9092"),
                    KafkaListenerOptions("0.0.0.0:9092", allow_insecure=True)):
        with pytest.raises(InvalidConfigError, match="needs --kafka-sasl-users"):
            options.check(router_has_keys=True)
    KafkaListenerOptions("127.0.0.1:9092", sasl_users=files["sasl_users"]).check(
        router_has_keys=True)


def test_a_certificate_without_its_key_or_one_that_does_not_load_is_refused(files, tmp_path):
    with pytest.raises(InvalidConfigError, match="go together"):
        KafkaListenerOptions("127.0.0.1:9092", tls_cert=files["tls_cert"]).check(False)
    not_a_cert = tmp_path / "not.pem"
    not_a_cert.write_text("hello")
    with pytest.raises(InvalidConfigError, match=f"certificate {not_a_cert}"):
        KafkaListenerOptions("127.0.0.1:9092", tls_cert=not_a_cert,
                             tls_key=files["tls_key"]).check(False)


def test_a_secret_file_others_may_read_is_refused_naming_it_its_mode_and_the_chmod(files):
    # Given a users file and a TLS key that the group and others may read
    for field in ("sasl_users", "tls_key"):
        loose = dict(files)
        loose[field].chmod(0o644)
        # When the listener's options are checked, Then it is refused, saying how to fix it
        with pytest.raises(InvalidConfigError) as refused:
            KafkaListenerOptions("127.0.0.1:9092", **loose).check(router_has_keys=False)
        assert f"{loose[field]} has mode 644: other users may read or change it. Run " \
               f"`chmod 600 {loose[field]}`" in str(refused.value)
        loose[field].chmod(0o600)
    KafkaListenerOptions("127.0.0.1:9092", **files).check(router_has_keys=False)


def test_an_encrypted_tls_key_is_refused_at_once_without_asking_for_its_passphrase(tmp_path):
    # Given a key encrypted with a passphrase
    cert, key = self_signed_certificate(tmp_path, passphrase=b"s3cret-phrase")
    # When the listener's options are checked with no terminal to prompt on
    # Then it is refused at once, saying what to give instead (OpenSSL's own prompt
    # would read the terminal, or fail with "[Errno 22] Invalid argument")
    with pytest.raises(InvalidConfigError, match=(
            f"the Kafka TLS key {key} is encrypted \\(it asks for a passphrase\\): give an "
            f"unencrypted PEM key")):
        KafkaListenerOptions("127.0.0.1:9092", tls_cert=cert, tls_key=key).check(False)


def test_an_expired_certificate_is_refused_and_one_soon_to_expire_or_not_yet_valid_is_warned_of(
        tmp_path, caplog):
    # Given a certificate that expired an hour ago
    cert, key = self_signed_certificate(tmp_path, valid_from_s=-86400, valid_for_s=82800,
                                        stem="expired")
    # Then the listener is refused, naming the file and its notAfter
    with pytest.raises(InvalidConfigError, match=f"certificate {cert} expired on .* GMT "
                                                 f"\\(notAfter\\): every client would fail"):
        KafkaListenerOptions("127.0.0.1:9092", tls_cert=cert, tls_key=key).check(False)
    # And one that expires in two days, or is valid only from tomorrow, starts with a WARNING
    for name, valid_from_s, valid_for_s, said in (
            ("soon", -300, 2 * 86400, "expires on .* GMT \\(notAfter\\), in 2.0 days"),
            ("later", 86400, 30 * 86400, "is not valid before .* GMT \\(notBefore\\)")):
        cert, key = self_signed_certificate(tmp_path, valid_from_s, valid_for_s, stem=name)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="plinth.router.kafka.service"):
            KafkaListenerOptions("127.0.0.1:9092", tls_cert=cert, tls_key=key).check(False)
        records = [r for r in caplog.records if r.name == "plinth.router.kafka.service"]
        assert [r.levelno for r in records] == [logging.WARNING]
        assert re.search(f"certificate {cert} {said}", records[0].getMessage())
    # And one valid for a day more than the warning's week starts quietly
    cert, key = self_signed_certificate(tmp_path, -300, 8 * 86400, stem="fine")
    caplog.clear()
    KafkaListenerOptions("127.0.0.1:9092", tls_cert=cert, tls_key=key).check(False)
    assert caplog.records == []


def test_plain_is_allowed_only_with_tls_or_on_loopback(files):
    assert KafkaListenerOptions("127.0.0.1:9092", sasl_users=files["sasl_users"]).plain_allowed()
    assert KafkaListenerOptions("[::1]:9092", sasl_users=files["sasl_users"]).plain_allowed()
    assert KafkaListenerOptions("0.0.0.0:9092", **files).plain_allowed()
    assert not KafkaListenerOptions("0.0.0.0:9092", sasl_users=files["sasl_users"],
                                    allow_insecure=True).plain_allowed()


def test_the_startup_line_says_in_a_sentence_what_tls_and_sasl_the_listener_has():
    assert security_summary(True, 4, True) == (
        "TLS, and a SASL login as one of 4 users by PLAIN or SCRAM-SHA-256")
    # (it said "on 127.0.0.1:9617 and SASL (4 users)" without TLS: "with TLS" dropped)
    assert security_summary(False, 4, True) == (
        "no TLS (plaintext), and a SASL login as one of 4 users by PLAIN or SCRAM-SHA-256")
    assert security_summary(False, 4, False) == (
        "no TLS (plaintext), and a SASL login as one of 4 users by SCRAM-SHA-256: not PLAIN, "
        "which would send passwords in the clear to a non-loopback address without TLS")
    assert security_summary(True, None, True) == (
        "TLS, no SASL login (every client is served as it connects)")
    assert security_summary(False, None, True) == (
        "no TLS (plaintext), no SASL login (every client is served as it connects)")


def test_a_connections_max_out_of_its_bounds_is_refused_naming_the_option_and_its_bounds():
    for connections_max in (limits.KAFKA_CONNECTIONS_MAX_MIN - 1,
                            limits.KAFKA_CONNECTIONS_MAX_MAX + 1):
        with pytest.raises(InvalidConfigError, match=(
                f"--kafka-connections-max {connections_max} is out of its bounds: give 20 to "
                f"100,000 \\(default 1,000\\)")):
            KafkaListenerOptions("127.0.0.1:9092", connections_max=connections_max).check(False)
    # And on the command line, before anything starts
    result = CliRunner().invoke(main, ["serve", "--kafka-listen", "127.0.0.1:0",
                                       "--kafka-connections-max", "19"])
    assert result.exit_code == 2
    assert "Invalid value for '--kafka-connections-max'" in result.output
    assert "19 is not in the range 20<=x<=100000" in result.output


def test_a_listener_given_a_connections_max_closes_the_connection_beyond_it_at_once():
    # Given a listener that keeps 20 connections, its shares of them scaled down too
    service = KafkaService(KafkaListenerOptions("127.0.0.1:0", connections_max=20),
                           "tcp://127.0.0.1:8799", "test-cluster")   # no request needs a router
    service.start()
    held = []
    try:
        listener = service._listener
        assert (listener.connections_max, listener.connections_before_login_max,
                listener.connections_before_login_per_address_max,
                listener.connections_per_principal_max) == (20, 5, 1, 2)
        # When 20 connections are open, and one more comes (the kernel's backlog
        # hands them to the listener in this order)
        for _ in range(20):
            held.append(connect(service.address))
        extra = connect(service.address)
        held.append(extra)
        # Then that one is closed at once
        assert closed_by_peer(extra)
    finally:
        for sock in held:
            sock.close()
        service.stop()


def test_plinth_serves_kafka_connections_max_reaches_the_listener_only_beside_kafka_listen():
    from plinth.server import ServeOptions, _kafka_options

    given = ServeOptions(data_dir=Path("."), kafka_listen="127.0.0.1:0", kafka_connections_max=50)
    assert _kafka_options(given).connections_max == 50
    default = ServeOptions(data_dir=Path("."), kafka_listen="127.0.0.1:0")
    assert _kafka_options(default).connections_max == limits.KAFKA_CONNECTIONS_MAX
    with pytest.raises(InvalidConfigError, match="--kafka-connections-max need --kafka-listen"):
        _kafka_options(ServeOptions(data_dir=Path("."), kafka_connections_max=50))
