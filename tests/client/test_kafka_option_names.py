"""An option of kafka-python's or aiokafka's clients that Plinth's lack
(client/kafka_option_names.py): each client class refuses it with TypeError
saying what to use instead, checked against the installed kafka-python's and
aiokafka's own option lists, so an option they add is noticed."""

from __future__ import annotations

import inspect

import aiokafka
import kafka
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from plinth import Admin, Consumer, Producer
from plinth.client.aio.admin import AIOAdmin
from plinth.client.aio.consumer import AIOConsumer
from plinth.client.aio.producer import AIOProducer
from plinth.client.kafka_option_names import ADVICE, unknown_option_message

NOWHERE = "tcp://127.0.0.1:1"   # never reached: the option is refused first


def parameters(function) -> set[str]:
    return {name for name, p in inspect.signature(function).parameters.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - {"self"}


KAFKA_OPTIONS = [
    (Producer, set(kafka.KafkaProducer.DEFAULT_CONFIG)),
    (Consumer, set(kafka.KafkaConsumer.DEFAULT_CONFIG)),
    (Admin, set(kafka.KafkaAdminClient.DEFAULT_CONFIG)),
    (AIOProducer, parameters(aiokafka.AIOKafkaProducer.__init__)),
    (AIOConsumer, parameters(aiokafka.AIOKafkaConsumer.__init__)),
    (AIOAdmin, parameters(AIOKafkaAdminClient.__init__)),
]


@pytest.mark.parametrize("cls, theirs", KAFKA_OPTIONS, ids=lambda v: getattr(v, "__name__", ""))
def test_every_option_of_the_matching_kafka_client_is_taken_or_refused_with_advice(cls, theirs):
    # Given the options kafka-python's or aiokafka's matching client takes
    ours = parameters(cls.__init__)
    for name in sorted(theirs - ours):
        # When one Plinth's client lacks is given / Then TypeError says what instead
        with pytest.raises(TypeError) as refused:
            cls(broker=NOWHERE, **{name: None})
        message = str(refused.value)
        assert message.startswith(f"{cls.__name__}() takes no {name}, a kafka-python or "
                                  f"aiokafka option: "), message


@pytest.mark.parametrize("cls, name, says", [
    (Producer, "batch_size", "batch_bytes_max"),
    (AIOProducer, "max_batch_size", "batch_bytes_max"),
    (Consumer, "partition_assignment_strategy", "group_assignor"),
    (Consumer, "max_partition_fetch_bytes", "fetch_max_bytes"),
    (Producer, "retries", "delivery_timeout_ms"),
    (Consumer, "ssl_cafile", "curve_key_file"),
    (AIOConsumer, "sasl_plain_username", "curve_key_file"),
    (Consumer, "isolation_level", "no transactions"),
])
def test_a_kafka_option_with_a_plinth_counterpart_names_it(cls, name, says):
    with pytest.raises(TypeError, match=says):
        cls(broker=NOWHERE, **{name: 1})


def test_a_misspelt_option_is_refused_naming_the_closest_options():
    with pytest.raises(TypeError, match=r"^Producer\(\) takes no option 'lnger_ms': "
                                        r"did you mean linger_ms\?$"):
        Producer(broker=NOWHERE, lnger_ms=5)


def test_an_option_like_none_of_its_own_is_refused_pointing_at_the_list():
    with pytest.raises(TypeError, match=r"^AIOConsumer\(\) takes no option 'zzz': its options "
                                        r"are listed in README Configuration$"):
        AIOConsumer("t", broker=NOWHERE, zzz=1)


def test_an_option_a_client_takes_is_never_refused_though_another_client_lacks_it():
    # Given an option only the producer takes, which the consumer's advice explains
    assert "metadata_max_age_ms" in ADVICE
    # When the producer is given it / Then it is taken
    producer = Producer(broker=NOWHERE, metadata_max_age_ms=1_000)
    producer.close(0)
    with pytest.raises(TypeError, match="only Plinth's producer takes it"):
        Consumer(broker=NOWHERE, metadata_max_age_ms=1_000)


def test_the_advice_names_only_options_of_kafka_clients():
    # An entry for a name no Kafka client has would be advice nobody needs.
    theirs = set().union(*(options for _, options in KAFKA_OPTIONS))
    assert set(ADVICE) - theirs == set()


def test_the_refused_option_is_the_first_by_name_when_several_are_given():
    message = unknown_option_message("Producer", "batch_size", {"linger_ms"})
    with pytest.raises(TypeError) as refused:
        Producer(broker=NOWHERE, retries=1, batch_size=2)
    assert str(refused.value) == message
