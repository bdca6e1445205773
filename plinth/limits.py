"""Every limit in Plinth, in one place, with why it exists.

Any process may import this module. Names carry their unit and put the
qualifier last (``batch_bytes_max``). The relations between limits are checked
once, at import, so a bad edit fails loudly before any broker starts.
"""

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# --- Addresses ----------------------------------------------------------
# Where a router listens and clients connect unless told otherwise: loopback,
# so a broker started without options is reachable from this machine only.
BROKER_URL_DEFAULT = "tcp://127.0.0.1:7400"

# --- Wire ---------------------------------------------------------------
# ZeroMQ drops a message with a frame over this size at the socket
# (ZMQ_MAXMSGSIZE) and the peer is disconnected, so neither the router nor a
# shard ever buffers a frame an attacker declared huge.
FRAME_BYTES_MAX = 64 * MiB
# A Request/Reply header is small; anything bigger is malformed.
HEADER_BYTES_MAX = 64 * KiB
# Queued messages per socket (ZMQ SNDHWM/RCVHWM). Bounds broker memory for
# clients that send faster than the broker drains.
SOCKET_MESSAGES_HWM = 1000
# Requests one client may have waiting at the shards (Kafka: a muted channel
# beyond max.in.flight); more get tooManyRequests. Bounds what one client can
# make the router and shards hold.
CLIENT_REQUESTS_IN_FLIGHT_MAX = 256
# Bytes of fetch replies the router may hold for clients that do not read them
# (router/unsent_replies.py); beyond them a reply becomes tooManyRequests.
CLIENT_REPLY_BYTES_UNSENT_MAX = 64 * MiB
ROUTER_REPLY_BYTES_UNSENT_MAX = 512 * MiB
# Replies smaller than this are copied by pyzmq anyway and are not tracked: the
# message high-water mark bounds them.
REPLY_BYTES_TRACKED_MIN = 64 * KiB
# Cap'n Proto traversal limit when reading a header: stops a crafted message
# from making the reader walk gigabytes of pointers.
HEADER_TRAVERSAL_WORDS_MAX = HEADER_BYTES_MAX // 8

# --- Record batches -----------------------------------------------------
# The largest RecordBatch a shard accepts (Kafka: message.max.bytes).
BATCH_BYTES_MAX = 16 * MiB
# Records in one batch.
BATCH_RECORDS_MAX = 1 << 20
# The producer's default batch size; a batch is sent when it reaches this.
PRODUCER_BATCH_BYTES_DEFAULT = 1 * MiB
PRODUCER_LINGER_MS_DEFAULT = 5
# Batches in flight per producer connection before send() blocks.
PRODUCER_REQUESTS_IN_FLIGHT_MAX = 32
# How long a batch may take, retries included, before its send fails
# (Kafka: delivery.timeout.ms), and the backoff between retries.
PRODUCER_DELIVERY_TIMEOUT_MS_DEFAULT = 120_000
PRODUCER_RETRY_BACKOFF_MS_DEFAULT = 100
PRODUCER_RETRY_BACKOFF_MAX_MS_DEFAULT = 1_000
# Consumers and admins retrying an "unavailable" answer (a group moving shards).
CLIENT_RETRY_BACKOFF_MS = 50
CLIENT_RETRY_BACKOFF_MAX_MS = 1_000
# Records buffered in a producer before send() blocks (bounded memory).
PRODUCER_BUFFER_BYTES_MAX = 64 * MiB
# Column buffers of acknowledged batches a producer keeps to fill the next
# ones (fresh buffers cost page faults and regrowth on every batch). Each
# keeps the capacity of the largest batch it held, at most about
# batch_bytes_max, so this bounds the memory kept beyond buffer_memory.
PRODUCER_SPARE_BATCHES_MAX = 4

# Idempotent producers: batches remembered per producer and partition, to
# answer a retry with its original offsets (as Kafka: 5), and producers
# remembered per partition (the least recently active are forgotten).
IDEMPOTENT_BATCHES_KEPT = 5
PRODUCERS_PER_PARTITION_MAX = 10_000

# --- Fetch --------------------------------------------------------------
FETCH_BYTES_MAX = 32 * MiB
FETCH_BYTES_DEFAULT = 4 * MiB
FETCH_WAIT_MS_MAX = 60_000
FETCH_WAIT_MS_DEFAULT = 500
# Fetches parked at the log end in one shard; one more is answered at once
# with an empty result rather than queued.
PARKED_FETCHES_MAX = 10_000

# --- Topics -------------------------------------------------------------
TOPIC_NAME_BYTES_MAX = 249            # as Kafka: fits a file name with suffixes
TOPICS_MAX = 10_000
PARTITIONS_PER_TOPIC_MAX = 4096
CONFIG_ENTRIES_MAX = 64

# --- Consumer groups -----------------------------------------------------
GROUP_NAME_BYTES_MAX = 249
GROUP_MEMBERS_MAX = 1000
SESSION_TIMEOUT_MS_MIN = 500
SESSION_TIMEOUT_MS_MAX = 300_000
SESSION_TIMEOUT_MS_DEFAULT = 10_000
HEARTBEAT_INTERVAL_MS_MIN = 100
HEARTBEAT_INTERVAL_MS_MAX = 3_000
AUTO_COMMIT_INTERVAL_MS_DEFAULT = 5_000

# --- Storage ------------------------------------------------------------
SEGMENT_BYTES_DEFAULT = 256 * MiB     # roll the active segment at this size
SEGMENT_BYTES_MIN = 4 * KiB
SEGMENT_BYTES_MAX = 1 * GiB           # positions in the offset index are UInt32
SEGMENT_MS_DEFAULT = 7 * 24 * 3600 * 1000   # roll after a week even if small
INDEX_INTERVAL_BYTES = 4 * KiB        # one offset/time index entry per 4 KiB
FSYNC_INTERVAL_MS_DEFAULT = 1000      # for fsync_policy = "interval"
# Threads a shard fsyncs its dirty partitions with at once, besides its loop thread.
FSYNC_THREADS_MAX = 7
# Retention defaults as Kafka's (7 days, no size limit); -1 keeps forever.
RETENTION_MS_DEFAULT = 7 * 24 * 3600 * 1000
RETENTION_BYTES_DEFAULT = -1
# How often a shard deletes expired segments (Kafka: 5 minutes).
RETENTION_CHECK_INTERVAL_S = 5.0
# Produce requests appended before the shard fsyncs and acknowledges them,
# even if more are waiting (group commit bound, keeps latency bounded).
GROUP_COMMIT_REQUESTS_MAX = 256

# --- Control plane --------------------------------------------------------
SHARDS_MAX = 256
# Ray restarts a dead shard actor at most this often before giving up on it.
SHARD_RESTARTS_MAX = 100
# How long the controller waits for shards at start before serving without
# the missing ones (their node is down; they join when it returns).
SHARD_START_WAIT_S = 30.0
# How often a router asks the controller for the routing table, to pick up
# restarted shards' new addresses.
ROUTING_REFRESH_INTERVAL_S = 1.0
CONTROL_CALL_TIMEOUT_S = 60.0
# A shard that does not answer a status or metrics call this fast is reported down.
STATUS_CALL_TIMEOUT_S = 5.0
SHUTDOWN_GRACE_PERIOD_S = 30.0
CLIENT_REQUEST_TIMEOUT_MS_DEFAULT = 30_000

# --- Producer (client/producer.py, accumulator.py, sender.py, _producer.c) ---
# How long send() blocks while buffer_memory is full before it raises
# (Kafka: max.block.ms).
PRODUCER_MAX_BLOCK_MS_DEFAULT = 60_000
# Steps one send() takes to place a record on the slow path: seal a full batch,
# move the sticky partition, seal again, open one, each after a wait for buffer
# room. Five suffice unless other threads keep filling the buffer between the
# wait and the append; the send then fails rather than loop.
PRODUCER_PLACEMENT_STEPS_MAX = 16
# The sender thread looks at linger, retry and request deadlines at least this
# often, even when nothing wakes it.
PRODUCER_SENDER_POLL_MS_MAX = 1000
# After an error in the sender loop that no batch explains (a bug), it pauses
# this long before going on, so that a fault that repeats cannot spin a core.
PRODUCER_SENDER_ERROR_PAUSE_MS = 100

# --- Consumer (client/consumer.py, fetcher.py, connection.py, group_membership.py)
# (placeholder: the consumer's and the connection's bounds go here)

# --- Router (router/) ------------------------------------------------------
# (placeholder: the router's bounds go here)

# --- Shard loop (shards/shard_server.py and what is split out of it) ----------
# (placeholder: the shard loop's bounds go here)

# --- Controller and shard actors (control/, shards/actor.py) -----------------
# (placeholder: the control plane's bounds go here)


def _check_relations() -> None:
    assert HEADER_BYTES_MAX < FRAME_BYTES_MAX
    assert BATCH_BYTES_MAX < FRAME_BYTES_MAX
    assert PRODUCER_BATCH_BYTES_DEFAULT <= BATCH_BYTES_MAX
    assert FETCH_BYTES_DEFAULT <= FETCH_BYTES_MAX < FRAME_BYTES_MAX
    # A client that reads always gets a whole maximal fetch through.
    assert FETCH_BYTES_MAX <= CLIENT_REPLY_BYTES_UNSENT_MAX <= ROUTER_REPLY_BYTES_UNSENT_MAX
    # One whole entry is always returned by a fetch, so it must fit a frame.
    assert BATCH_BYTES_MAX + 48 <= FRAME_BYTES_MAX
    assert SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX < 2**32
    assert BATCH_BYTES_MAX < SEGMENT_BYTES_MAX
    assert FETCH_WAIT_MS_DEFAULT <= FETCH_WAIT_MS_MAX
    assert PRODUCER_REQUESTS_IN_FLIGHT_MAX <= CLIENT_REQUESTS_IN_FLIGHT_MAX <= SOCKET_MESSAGES_HWM
    assert SESSION_TIMEOUT_MS_MIN <= SESSION_TIMEOUT_MS_DEFAULT <= SESSION_TIMEOUT_MS_MAX
    # A member must get several heartbeats in per session timeout.
    assert HEARTBEAT_INTERVAL_MS_MAX * 3 <= SESSION_TIMEOUT_MS_DEFAULT


_check_relations()
