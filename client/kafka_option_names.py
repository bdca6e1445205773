"""What an option of kafka-python's or aiokafka's clients that Plinth's lack becomes.

Client side, in the caller's thread, once per constructor call. A team moving
from kafka-python or aiokafka passes its old options: ``batch_size=``,
``client_id=``, ``security_protocol=``. Python's own answer, "got an
unexpected keyword argument 'batch_size'", says neither that Plinth's name is
``batch_bytes_max`` nor why ``client_id`` has no place. ``kafka_option_names``
wraps a client class's ``__init__``: an option it does not take raises
TypeError naming the class and the option, and then

- for a name of Kafka's clients (``ADVICE``, or a prefix in ``PREFIX_ADVICE``):
  Plinth's option that does its work, or why none is needed;
- for any other name: the options it takes that are closest to it (a typo),
  or where they are listed.

The check runs before the constructor, so a refused option leaves nothing open.
The constructor's signature is the one ``help()`` shows (``functools.wraps``).
"""

from __future__ import annotations

import difflib
import functools
import inspect

_CURVE = ("Plinth's clients authenticate and encrypt with CurveZMQ: curve_key_file and "
          "curve_server_key_file (README Security); TLS and SASL are the Kafka listener's, "
          "for Kafka clients")
_NETWORK = ("it sets kafka-python's own network layer: Plinth's clients use ZeroMQ sockets, "
            "which reconnect by themselves, bounded by plinth/limits.py")
_METRICS = ("Plinth's clients keep no metrics of their own: the broker's are served on "
            "/metrics (plinth serve --metrics-port)")
_TRANSACTIONS = ("Plinth has no transactions; the idempotent producer (the default) keeps "
                 "retries from storing a record twice")
_BATCH = ("Plinth's is batch_bytes_max, in bytes (Kafka's batch.size: a batch encodes within "
          "it, header included)")

ADVICE: dict[str, str] = {
    "batch_size": _BATCH,
    "max_batch_size": _BATCH,   # aiokafka's
    "partition_assignment_strategy": (
        "Plinth's is group_assignor, \"sticky\" or \"range\": the group's coordinator assigns "
        "the partitions, as in Kafka's consumer protocol (KIP-848)"),
    "max_partition_fetch_bytes": (
        "Plinth fetches each partition in a request of its own: fetch_max_bytes (default "
        "4 MiB) bounds each, as this bounds a partition's share in Kafka"),
    "retries": (
        "a batch refused for a passing reason is retried until delivery_timeout_ms, as "
        "Kafka's producer does by default (retries=MAX_INT): bound it with "
        "delivery_timeout_ms"),
    "max_request_size": (
        "a produce request carries one batch: batch_bytes_max bounds it, and the topic's "
        "max.message.bytes refuses a larger one"),
    "partitioner": (
        "Plinth partitions as Kafka's default partitioner does (murmur2 of the key; records "
        "without a key stick to one partition per batch); send(..., partition=N) picks one"),
    "transactional_id": _TRANSACTIONS,
    "transaction_timeout_ms": _TRANSACTIONS,
    "isolation_level": (
        "Plinth has no transactions: every stored record is committed, so read_committed "
        "and read_uncommitted read the same records"),
    "client_id": (
        "Plinth's requests carry no client id: a broker knows a client by its connection "
        "(and, with CurveZMQ, by its public key)"),
    "api_version": "Plinth's clients and broker speak one protocol, agreed when they connect",
    "security_protocol": _CURVE,
    "heartbeat_interval_ms": (
        "the group's coordinator sets the heartbeat interval, as in Kafka's consumer "
        "protocol (KIP-848); session_timeout_ms is the member's"),
    "rebalance_timeout_ms": (
        "the group's coordinator assigns partitions itself (Kafka's consumer protocol, "
        "KIP-848), so no member's join is waited for; max_poll_interval_ms bounds how long "
        "a member may go without polling"),
    "group_instance_id": (
        "Plinth's own consumers have no static membership: a member that leaves gives its "
        "partitions up at once (Kafka clients' group.instance.id works on the Kafka listener)"),
    "fetch_min_bytes": ("a fetch is answered as soon as its partition has a record, or after "
                        "fetch_max_wait_ms"),
    "check_crcs": "Plinth's consumer always checks every stored entry's CRC-32C",
    "allow_auto_create_topics": (
        "Plinth's clients never create a topic: create it first (Admin.create_topics, "
        "plinth topic create)"),
    "exclude_internal_topics": ("Plinth keeps committed offsets in its shards, not in a topic "
                                "a consumer could subscribe to"),
    "enable_incremental_fetch_sessions": ("Plinth has no fetch sessions: each partition is "
                                          "fetched in a request of its own"),
    "default_offset_commit_callback": "pass the callback to each commit_async(callback=...)",
    "client_rack": "Plinth has no racks: a consumer reads each partition from its leader",
    "loop": ("the client runs on the event loop its start() is awaited on (aiokafka "
             "dropped this option in 0.8)"),
    "metadata_max_age_ms": (
        "only Plinth's producer takes it (the topics it writes to); a consumer learns a "
        "topic's partitions from its group's coordinator, or from assign()"),
    "max_in_flight_requests_per_connection": (
        "only Plinth's producer takes it; a consumer bounds its fetches in flight itself, "
        "by the bytes they may bring (README: Consumer groups, Many partitions)"),
    "retry_backoff_ms": (
        "only Plinth's producer takes it; a consumer's and an admin's retries back off "
        "from CLIENT_RETRY_BACKOFF_MS (50) doubling to CLIENT_RETRY_BACKOFF_MAX_MS (1,000)"),
    **{name: _NETWORK for name in (
        "reconnect_backoff_ms", "reconnect_backoff_max_ms", "connections_max_idle_ms",
        "send_buffer_bytes", "receive_buffer_bytes", "socket_options", "selector",
        "kafka_client", "client_dns_lookup", "proxy_url", "socks5_proxy",
        "bootstrap_timeout_ms", "receive_message_max_bytes")},
    **{name: _METRICS for name in (
        "metrics_enabled", "metric_reporters", "metrics_num_samples",
        "metrics_sample_window_ms", "metric_group_prefix")},
}

PREFIX_ADVICE: dict[str, str] = {"ssl_": _CURVE, "sasl_": _CURVE}


def unknown_option_message(owner: str, name: str, accepted) -> str:
    """The TypeError's text for ``owner``'s option ``name``, which it does not take
    (``accepted``: the options it does)."""
    advice = ADVICE.get(name) or next(
        (text for prefix, text in PREFIX_ADVICE.items() if name.startswith(prefix)), None)
    if advice is not None:
        return f"{owner}() takes no {name}, a kafka-python or aiokafka option: {advice}"
    close = difflib.get_close_matches(name, sorted(accepted), n=3)
    hint = (f"did you mean {' or '.join(close)}?" if close
            else "its options are listed in README Configuration")
    return f"{owner}() takes no option {name!r}: {hint}"


def kafka_option_names(cls):
    """Class decorator: ``cls(...)`` with a keyword option its ``__init__`` does not
    take raises TypeError saying what to use instead (see the module)."""
    init = cls.__init__
    accepted = frozenset(
        name for name, parameter in inspect.signature(init).parameters.items()
        if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD))

    @functools.wraps(init)
    def __init__(self, *args, **options):
        unknown = sorted(options.keys() - accepted)
        if unknown:
            raise TypeError(unknown_option_message(cls.__name__, unknown[0], accepted))
        init(self, *args, **options)

    cls.__init__ = __init__
    return cls
