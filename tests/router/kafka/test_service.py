"""service.py's KafkaListenerOptions.check: what a Kafka listener needs before it
starts - TLS and SASL off loopback (unless --allow-insecure), SASL beside
CurveZMQ, both TLS files, files that load - each refusal naming what is missing."""

from __future__ import annotations

import pytest

from plinth.errors import InvalidConfigError
from plinth.router.kafka.sasl_users import add_user
from plinth.router.kafka.service import KafkaListenerOptions
from tests.router.kafka.self_signed import self_signed_certificate


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
