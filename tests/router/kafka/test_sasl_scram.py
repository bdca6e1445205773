"""SCRAM-SHA-256's server side (router/kafka/sasl_scram.py): RFC 7677's test
vector, byte for byte; a wrong password, a replayed or altered nonce, channel
binding and an unknown user are refused, the last like a wrong password."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from plinth.errors import SaslAuthenticationError
from plinth.router.kafka.sasl_scram import ScramExchange
from plinth.router.kafka.sasl_users import credential_for, salted_password

# RFC 7677, section 3.
USER, PASSWORD = "user", "pencil"
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SERVER_FIRST = (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def rfc_exchange(users=None) -> ScramExchange:
    users = {USER: credential_for(PASSWORD, 4096, SALT)} if users is None else users
    return ScramExchange(users, server_nonce=lambda: SERVER_NONCE)


def client_final_for(password: str, server_first: bytes, client_first_bare: bytes,
                     gs2: bytes = b"n,,", nonce: bytes | None = None) -> bytes:
    """What a correct client sends for ``password`` (RFC 5802, section 3); ``nonce``:
    the one it sends back, if not the server's."""
    attributes = dict(item.split("=", 1) for item in server_first.decode().split(","))
    salted = salted_password(password, base64.b64decode(attributes["s"]), int(attributes["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    without_proof = (b"c=" + base64.b64encode(gs2) + b",r="
                     + (attributes["r"].encode() if nonce is None else nonce))
    auth_message = client_first_bare + b"," + server_first + b"," + without_proof
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    return without_proof + b",p=" + base64.b64encode(proof)


def test_the_server_answers_rfc_7677s_test_vector_byte_for_byte():
    exchange = rfc_exchange()
    assert exchange.first(CLIENT_FIRST) == SERVER_FIRST
    assert exchange.final(CLIENT_FINAL) == SERVER_FINAL
    assert exchange.user == USER


def test_a_proof_made_with_another_password_is_refused_naming_the_user():
    exchange = rfc_exchange()
    server_first = exchange.first(CLIENT_FIRST)
    wrong = client_final_for("pencils", server_first, CLIENT_FIRST[3:])
    with pytest.raises(SaslAuthenticationError, match="user 'user': wrong password") as caught:
        exchange.final(wrong)
    assert "pencil" not in str(caught.value)


def test_a_proof_made_with_the_right_password_by_a_real_client_computation_is_accepted():
    exchange = ScramExchange({"alice": credential_for("s3cret")})
    first = b"n,,n=alice,r=abcdefgh"
    server_first = exchange.first(first)
    assert server_first.startswith(b"r=abcdefgh") and len(server_first) > len(b"r=abcdefgh,s=,i=")
    exchange.final(client_final_for("s3cret", server_first, first[3:]))
    assert exchange.user == "alice"


def test_an_unknown_user_gets_a_server_first_like_any_and_fails_at_the_proof():
    exchange = rfc_exchange(users={})
    server_first = exchange.first(b"n,,n=mallory,r=abcdefgh")
    assert b",s=" in server_first and b",i=" in server_first
    again = rfc_exchange(users={}).first(b"n,,n=mallory,r=abcdefgh")
    assert server_first.split(b",")[1] == again.split(b",")[1]   # the same salt each time
    with pytest.raises(SaslAuthenticationError, match="wrong password"):
        exchange.final(client_final_for("anything", server_first, b"n=mallory,r=abcdefgh"))


def test_a_nonce_that_is_not_the_servers_is_refused():
    exchange = rfc_exchange()
    exchange.first(CLIENT_FIRST)
    with pytest.raises(SaslAuthenticationError, match="nonce"):
        exchange.final(CLIENT_FINAL.replace(b"hNlF$k0", b"hNlF$k1"))


def test_librdkafka_2_0_2s_nonce_with_its_own_part_twice_is_accepted_as_kafka_accepts_it():
    # Given librdkafka 2.0.2's client-final: r=<client nonce><client nonce><server's part>,
    # with a proof computed over the nonce as it sent it (captured by tester J)
    exchange = ScramExchange({"alice": credential_for("s3cret")})
    first = b"n,,n=alice,r=abcdefgh"
    server_first = exchange.first(first)
    servers_nonce = server_first.split(b",")[0][2:]
    final = client_final_for("s3cret", server_first, first[3:],
                             nonce=b"abcdefgh" + servers_nonce)
    # When it is checked / Then it logs in (Kafka checks that the nonce ends with the
    # server's; RFC 5802 wants them equal)
    exchange.final(final)
    assert exchange.user == "alice"


def test_a_nonce_that_only_starts_with_the_servers_is_refused():
    exchange = rfc_exchange()
    exchange.first(CLIENT_FIRST)
    with pytest.raises(SaslAuthenticationError, match="nonce does not end with"):
        exchange.final(CLIENT_FINAL.replace(b"hNlF$k0,", b"hNlF$k0x,"))


def test_a_channel_binding_echo_that_is_not_the_gs2_header_is_refused():
    exchange = rfc_exchange()
    exchange.first(CLIENT_FIRST)
    with pytest.raises(SaslAuthenticationError, match="channel binding"):
        exchange.final(CLIENT_FINAL.replace(b"c=biws", b"c=eSws"))


@pytest.mark.parametrize("message, why", [
    (b"p=tls-unique,,n=user,r=abc", "channel binding"),
    (b"n,,n=user,r=abc,m=ext", "mandatory extension"),
    (b"n,,r=abc", "lacks n= or r="),
    (b"n,a=admin,n=user,r=abc", "may not act as"),
    (b"n=user,r=abc", "gs2 header"),
    (b"n,,n=us=er,r=abc", "bare '='"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_a_client_first_message_that_breaks_the_rules_is_refused(message, why):
    with pytest.raises(SaslAuthenticationError, match=why):
        rfc_exchange().first(message)


def test_an_escaped_user_name_is_unescaped_and_an_authzid_equal_to_it_is_accepted():
    exchange = ScramExchange({"a,b=c": credential_for("pw")})
    first = b"n,a=a=2Cb=3Dc,n=a=2Cb=3Dc,r=nonce"
    server_first = exchange.first(first)
    exchange.final(client_final_for("pw", server_first, first[len(b"n,a=a=2Cb=3Dc,"):],
                                    gs2=b"n,a=a=2Cb=3Dc,"))
    assert exchange.user == "a,b=c"
