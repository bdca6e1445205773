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
# How long a client command waits for each --broker host name to resolve before it
# says the name does not (getaddrinfo has no timeout of its own; ZeroMQ resolves in
# the background and a name that never resolves looked like a broker that is down).
CLI_BROKER_RESOLVE_TIMEOUT_MS = 5_000

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
# ... and the bytes of those requests (every frame: produce batches above all),
# at the shards or held for their topic (router/requests_in_flight.py); more get
# tooManyRequests. Without it one client sending 64 produces of 16 MiB whose
# replies it never read held a gigabyte in the router. A Plinth producer has at
# most buffer_memory (PRODUCER_BUFFER_BYTES_MAX) of records unacknowledged, each
# request a header besides, and the Kafka listener's backend (one client for
# every Kafka connection) at most the listener's KAFKA_REQUEST_BYTES_IN_FLIGHT_MAX
# of batches (each Plinth produce carries a batch of a Kafka request in flight)
# and a header per request it may have in flight, so neither meets this bound;
# one request always fits when nothing of its client's is in flight. A client's
# acks=0 produces are counted apart, against the same two bounds again
# (router/requests_in_flight.py: their answers, errors only, never free a place in
# the other count), so one client may have 2 × 256 requests and 2 × 144 MiB in
# flight; the router's bound below holds both.
CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX = 144 * MiB
# ... and of every client's together (held ones too): beyond it a request gets
# tooManyRequests, as Kafka's queued.max.request.bytes bounds a broker's. Without
# it, clients that each kept within their own share could together make the
# router hold their share times their number while a shard reads slowly.
ROUTER_REQUEST_BYTES_IN_FLIGHT_MAX = 512 * MiB
# Bytes of fetch replies the router, or a shard's direct socket, may hold for
# clients that do not read them (plinth/unsent_replies.py); beyond them a reply
# becomes tooManyRequests. A client's share is a sixteenth of the router's, so
# that clients that stop reading cannot use up the router's budget before they
# are disconnected (CLIENT_REPLIES_STALLED_MS_MAX).
CLIENT_REPLY_BYTES_UNSENT_MAX = 32 * MiB
ROUTER_REPLY_BYTES_UNSENT_MAX = 512 * MiB
SHARD_DIRECT_REPLY_BYTES_UNSENT_MAX = 256 * MiB
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
# The most bytes a compressed Kafka batch's records may decompress to in a
# consumer (format/kafka_batch.py). The shard never decompresses, so this is the
# only bound on what a compressed batch costs its reader: without it, a few KiB
# of zstd (a "zip bomb") would make every consumer allocate gigabytes. Four times
# the largest batch leaves room for any real compression ratio of a full batch
# (Kafka producers fill batch.size with compressed bytes) and is allocated only
# as virtual memory: the pages the records do not use are never touched.
KAFKA_BATCH_DECOMPRESSED_BYTES_MAX = 4 * BATCH_BYTES_MAX
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
# Position resets (listOffsets) one consumer has unanswered at once; the rest of its
# partitions without a position are asked as answers come. Without it a consumer of
# 1,500 new partitions sent 1,500 at once: past CLIENT_REQUESTS_IN_FLIGHT_MAX each
# was refused (tooManyRequests, a WARNING per partition), and an asyncio consumer's
# socket queue (SOCKET_MESSAGES_HWM) filled.
CONSUMER_POSITION_RESETS_IN_FLIGHT_MAX = 64
# Records buffered in a producer before send() blocks (bounded memory).
PRODUCER_BUFFER_BYTES_MAX = 64 * MiB
# Column buffers of acknowledged batches a producer keeps to fill the next
# ones (fresh buffers cost page faults and regrowth on every batch). Each
# keeps the capacity of the largest batch it held, at most about
# batch_bytes_max, so this bounds the memory kept beyond buffer_memory.
PRODUCER_SPARE_BATCHES_MAX = 4

# Idempotent producers: batches remembered per producer and partition, to
# answer a retry with its original offsets (as Kafka: 5), and producers
# remembered per partition (see PRODUCER_ID_EXPIRATION_MS for who is forgotten).
IDEMPOTENT_BATCHES_KEPT = 5
PRODUCERS_PER_PARTITION_MAX = 10_000
# Batches of one partition an idempotent producer has sent and not yet seen
# acknowledged, counted from its first unacknowledged one (Kafka: at most 5
# with idempotence). No more than the shard remembers per producer, so that a
# retry of the oldest is still answered with its offsets when every later one
# was stored (client/partition_pipeline.py).
PRODUCER_BATCHES_IN_FLIGHT_PER_PARTITION_MAX = 5

# --- Fetch --------------------------------------------------------------
FETCH_BYTES_MAX = 32 * MiB
FETCH_BYTES_DEFAULT = 4 * MiB
FETCH_WAIT_MS_MAX = 60_000
FETCH_WAIT_MS_DEFAULT = 500
# A consumer of more partitions than it may have fetches in flight parks each fetch
# for a share of its fetch_max_wait_ms, so that every partition is asked about as
# often as a narrow consumer's would be (client/fetcher.py); never for less than this.
FETCH_WAIT_MS_SHARED_MIN = 100
# Fetches parked at the log end in one shard; one more is answered at once
# with an empty result rather than queued.
PARKED_FETCHES_MAX = 10_000

# --- Topics -------------------------------------------------------------
TOPIC_NAME_BYTES_MAX = 249            # as Kafka: fits a file name with suffixes
TOPICS_MAX = 10_000
PARTITIONS_PER_TOPIC_MAX = 4096
CONFIG_ENTRIES_MAX = 64
# Topics in one createTopics request (Admin.create_topics), created in one controller
# call: one save of the metadata and one rewrite of each shard's manifest for all of
# them, each of which costs as much as one topic's create at that many topics. Bounded
# so that the longest names fit a header (relation below) and the shards open their
# partitions well within CONTROL_CALL_TIMEOUT_S.
CREATE_TOPICS_BATCH_MAX = 100
# A shard remembers the partitions it deleted with their topic (shards/deleted_partitions.py)
# this long, this many at most (the oldest forgotten first): a request for one, from a
# router or a direct client whose map predates the delete, is answered "topic ... was
# deleted" (unknownTopic) instead of "not on this shard, retry". Routers refresh every
# ROUTING_REFRESH_INTERVAL_S and clients' metadata ages PRODUCER_METADATA_MAX_AGE_MS_DEFAULT
# at most, so a map that stale is rare after this; past it the answer is the old one.
SHARD_DELETED_PARTITIONS_REMEMBERED_S = 600.0
SHARD_DELETED_PARTITIONS_REMEMBERED_MAX = 10_000

# --- Lines unauthenticated clients can cause (plinth/log_limit.py) --------
# A refused CurveZMQ key, a failed SASL login, a connection over the limit: at most
# one line per source (a key, a user, an address) per interval, the next saying how
# many were dropped; this many sources remembered, the least recently logged
# forgotten first.
UNAUTHENTICATED_LOG_INTERVAL_S = 60.0
UNAUTHENTICATED_LOG_SOURCES_MAX = 1024
# ... and at most this many such lines in all per interval, from one limiter (the
# Kafka listener's failed logins, its refused connections, the router's refused
# keys: each its own), then one line saying how many were dropped. The sources
# are what the client sends (a user name, a key), so a fresh one per try wrote a
# line per try (5,595 failed logins in 10 s, 5,595 lines). A hundred a minute
# still shows an operator many sources of one flood.
UNAUTHENTICATED_LOG_LINES_MAX = 100
# Failed console logins: one line per client address per interval, as above, and at
# most this many of all addresses per interval (the next written line says how many
# were dropped): a guesser with many addresses (an IPv6 /64) cannot flood the log.
CONSOLE_LOGIN_FAILED_LOG_LINES_MAX = 20

# --- Certificates ---------------------------------------------------------
# A listener's TLS certificate that expires within this is warned of at startup
# (one that has expired is refused: every client's handshake would fail). A
# week leaves a weekly restart, or an operator reading the log, time to renew it.
TLS_CERT_EXPIRY_WARNING_S = 7 * 24 * 3600.0

# --- Consumer groups -----------------------------------------------------
GROUP_NAME_BYTES_MAX = 249
GROUP_MEMBERS_MAX = 1000
SESSION_TIMEOUT_MS_MIN = 500
SESSION_TIMEOUT_MS_MAX = 300_000
SESSION_TIMEOUT_MS_DEFAULT = 10_000
# The most time a group member's application may spend between two poll() (getmany())
# calls before its heartbeat leaves the group, so that its partitions move to a member
# that reads them (Kafka's max.poll.interval.ms, and its default: 5 minutes). The
# heartbeat wakes when it runs out, not only at its interval; bounded below by the
# shortest interval, under which a member would leave between two quick polls.
MAX_POLL_INTERVAL_MS_MIN = 100
MAX_POLL_INTERVAL_MS_DEFAULT = 300_000
HEARTBEAT_INTERVAL_MS_MIN = 100
HEARTBEAT_INTERVAL_MS_MAX = 3_000
AUTO_COMMIT_INTERVAL_MS_DEFAULT = 5_000
# The UTF-8 bytes of the metadata a commit may store with each offset (Kafka's
# offset.metadata.max.bytes; frameworks such as Kafka Streams keep state there):
# beyond it the whole commit is refused (OffsetMetadataTooLargeError). It also
# bounds each record of the offsets log and so its compaction batches.
OFFSET_METADATA_BYTES_MAX = 4096
# A commit (or reset) of more offsets than one request header holds is sent in parts
# (protocol.commit_offsets_parts), each's offsets at most this many bytes: what is
# left of HEADER_BYTES_MAX is room for the group's name, the member's id (a Kafka
# client's id and a UUID) and its instance id. Each part is all or none; the parts
# are not (Kafka's commits are per partition).
COMMIT_PART_OFFSETS_BYTES_MAX = HEADER_BYTES_MAX - 4 * KiB

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
# Partitions a shard's loop checks for retention between two looks at its sockets
# (about 2.5 us each when nothing expired: a whole sweep of 10,000 held it 25 ms).
RETENTION_SWEEP_SLICE_PARTITIONS = 256
# Produce requests appended before the shard fsyncs and acknowledges them,
# even if more are waiting (group commit bound, keeps latency bounded).
GROUP_COMMIT_REQUESTS_MAX = 256

# --- Admin pages (the console's lists: plinth/name_pages.py, client/admin.py) ----
# Names in one page of listTopicsPage / listGroupsPage. A page's answer stays within
# HEADER_TRAVERSAL_WORDS_MAX words (8192), the limit a client from before session 15
# applied to every reply (a reply's reader limit now grows with its size: protocol.py
# _reply_read_limits): a name costs a pointer word and its text's words, 33 at the
# longest, so a page of the longest names holds ~240.
ADMIN_LIST_PAGE_NAMES_MAX = 200
ADMIN_LIST_PAGE_NAMES_DEFAULT = 100   # what the console shows
# Topics in one topicStats request: the console asks for the topics on one page. Its
# answer costs 7 words per topic besides the name (relation below).
ADMIN_TOPIC_STATS_NAMES_MAX = ADMIN_LIST_PAGE_NAMES_MAX

# --- Control plane --------------------------------------------------------
SHARDS_MAX = 256
# A new data dir's shards, without --shards: one per CPU of each node, leaving this
# many CPUs of it to its router and local clients (control/placement.py,
# default_shard_count).
SHARD_DEFAULT_CPUS_LEFT = 1
# Ray restarts a dead shard actor at most this often before giving up on it.
SHARD_RESTARTS_MAX = 100
# A shard actor dead for good (Ray's restarts used up, or ended without one) is started
# anew by the controller (control/shard_revivals.py), as a process supervisor would,
# without bound on the attempts: first after the first delay, each next one after
# twice the last, up to the second. A broker under too small a memory limit is not
# restarted in a tight loop, and one whose limit was raised comes back by itself.
SHARD_REVIVAL_BACKOFF_S_MIN = 5.0
SHARD_REVIVAL_BACKOFF_S_MAX = 300.0
# After the server hears of a Ray worker's death (plinth/ray_messages.py asks the
# controller whose process it was), every leader check looks this long for shards Ray
# gave up on (ShardSet.dead_for_good: one name lookup each), even on a broker without
# replicated partitions, whose lease sleeps otherwise: Ray frees a dead actor's name
# shortly after the death is reported, not at once.
SHARD_DEATH_LOOK_S = 30.0
# The controller's reviver thread (control/shard_reviver.py) looks for shards Ray gave
# up on, and starts those due, this often while one is scheduled or starting (it
# sleeps otherwise): a revival comes at most this long after its backoff.
SHARD_REVIVAL_CHECK_INTERVAL_S = 1.0
# Ray restarts a dead controller actor at most this often (it recovers by itself:
# control/controller.py); beyond that the broker needs its server restarted.
CONTROLLER_RESTARTS_MAX = 100
# A handle found by name asks a restarting controller again, backing off (doubling)
# from the first to the second, until its call's timeout.
CONTROLLER_RESTART_BACKOFF_S_MIN = 0.1
CONTROLLER_RESTART_BACKOFF_S_MAX = 2.0
# Threads of the controller that run the queries waiting for shards (describe, status,
# offsets, stats, groups), apart from the one that runs every change and election: a
# describe waiting STATUS_CALL_TIMEOUT_S for a dead leader holds up no election.
# Beyond this many at once, queries queue in Ray.
CONTROLLER_QUERY_THREADS = 4
# How long the controller waits for shards at start before serving without
# the missing ones (their node is down; they join when it returns).
SHARD_START_WAIT_S = 30.0
# An add of shards waits for its new shards within its caller's deadline, keeping
# this long to stop them and answer; with less than SHARD_START_WAIT_S_MIN left it
# is refused before it starts any.
SHARD_ADD_ANSWER_MARGIN_S = 3.0
SHARD_START_WAIT_S_MIN = 5.0
# Within that wait, a call to a shard actor Ray reports restarting (its process died:
# ActorUnavailableError, at once) is asked again this often, until the actor answers
# or the wait ends: a controller must neither judge it gone nor miss its address.
SHARD_RESTARTING_RETRY_INTERVAL_S = 0.2
# How often a router asks the controller for the routing table, to pick up
# restarted shards' new addresses.
ROUTING_REFRESH_INTERVAL_S = 1.0
# A router not heard from (its routing refreshes, every ROUTING_REFRESH_INTERVAL_S)
# for this long is left out of status and of the Kafka brokers clients are told
# of: killed, or its node lost, without saying it stopped (Kafka's
# broker.session.timeout.ms is 9 s). After ROUTER_FORGOTTEN_S it is forgotten;
# a refresh registers it again.
ROUTER_SILENT_S_MAX = 10.0
ROUTER_FORGOTTEN_S = 3600.0
CONTROL_CALL_TIMEOUT_S = 60.0
# How long a change of topics (created, deleted, altered, grown) waits for its shards
# on the controller's change thread: below the clients' default request timeout
# (CLIENT_REQUEST_TIMEOUT_MS_DEFAULT), so that a change held up by a stopped shard is
# answered by the controller, naming the shard, before its client gives up.
CHANGE_SHARD_WAIT_S = 20.0
# Deletes a shard was told of and has not confirmed, kept per shard in the metadata
# (control/metadata.py's deletes_owed) and sent again when it starts: one per topic
# deleted (or create undone) while it was down. Beyond it the oldest are forgotten,
# logged: their partitions stay on that shard's disk, routed to no one.
OWED_DELETES_PER_SHARD_MAX = TOPICS_MAX
# A shard that does not answer a status or metrics call this fast is reported down.
STATUS_CALL_TIMEOUT_S = 5.0
# The metrics endpoint's /ready asks the controller for its start report; a probe
# given no answer in this long is told 503 (a probe's own timeout must be longer:
# Kubernetes' timeoutSeconds 3, say).
METRICS_READY_CHECK_TIMEOUT_S = 2.0
SHUTDOWN_GRACE_PERIOD_S = 30.0
CLIENT_REQUEST_TIMEOUT_MS_DEFAULT = 30_000
# The largest timeoutMs a change request carries (schemas/protocol.capnp: a UInt16):
# a client that waits longer sends this, which is beyond what the router waits for
# the controller (CONTROL_CALL_TIMEOUT_S) anyway.
TIMEOUT_MS_FIELD_MAX = 2**16 - 1
# The largest value of a client's time option in ms (request_timeout_ms,
# linger_ms, delivery_timeout_ms, ...): Kafka's are Java ints, and a finite
# bound keeps every deadline computed from them a real time (no inf, no nan).
CLIENT_OPTION_MS_MAX = 2**31 - 1
# The longest wait a client call takes in seconds (future.get, flush, close, stop):
# the same bound as a time option, so that a deadline computed from it stays
# below threading.TIMEOUT_MAX. None (or inf) is no limit.
CLIENT_WAIT_S_MAX = CLIENT_OPTION_MS_MAX / 1000
# The CLI's client commands (plinth/cli.py): --request-timeout-ms is at most an
# hour, and a --linger-ms at most what leaves room for it: `plinth produce`'s
# delivery timeout is linger + request timeout (Kafka's least), which must itself
# be a client time option. Larger values are refused by click, naming the option.
CLI_REQUEST_TIMEOUT_MS_MAX = 3_600_000
CLI_LINGER_MS_MAX = CLIENT_OPTION_MS_MAX - CLI_REQUEST_TIMEOUT_MS_MAX
# Offsets and timestamps travel as Cap'n Proto Int64s: a larger one cannot be sent.
INT64_MAX = 2**63 - 1

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
# A producer asks the broker a topic's partition count again this long after it last
# asked (Kafka: metadata.max.age.ms, whose default this is), so that it sends to the
# partitions a topic gained, within this time, while it runs.
PRODUCER_METADATA_MAX_AGE_MS_DEFAULT = 300_000
# ...and no sooner than this after it last asked, whatever made it ask: a partition a
# batch was refused for as missing (the topic was re-created with fewer partitions),
# or metadata_max_age_ms=0. At most one question per topic is in flight, so a topic
# costs at most one metadata request per this many ms (Kafka's retry.backoff.ms
# between metadata requests, 100 ms).
PRODUCER_METADATA_REFRESH_MS_MIN = 100

# --- Consumer (client/consumer.py, fetcher.py, connection.py, group_membership.py)
# Records one poll() hands out unless told otherwise (Kafka: max.poll.records):
# enough to amortize a call, few enough that auto-commit follows closely.
CONSUMER_POLL_RECORDS_DEFAULT = 500
# The most records one poll() may be asked for (Kafka's max.poll.records is a Java int).
CONSUMER_POLL_RECORDS_MAX = 2**31 - 1
# A group member's poll() waits on its socket at most this long at a time, then
# takes the heartbeat thread's newest assignment: bounds how long a revoked
# partition stays here while its next owner waits for it.
CONSUMER_GROUP_POLL_SLICE_MS = 100
# An error about a partition a consumer is not assigned names at most this many of
# those it is (it may have thousands): enough to see the topic or the number meant.
CONSUMER_ERROR_PARTITIONS_NAMED_MAX = 10
# A healthy shard answers a fetch within its wait (fetch_max_wait_ms: parked at the
# log end, it is answered even with no record) and a position reset (listOffsets) at
# once; one unanswered this much longer is overdue (Fetcher.overdue): the shard may
# hang, the partition is not read. `plinth consume` reports it when its --timeout-ms
# ends (it read such a partition as empty until the fetch was given up as lost, after
# the request timeout, 30 s). Long enough that a loaded machine's pauses are not
# taken for a hang; well under the request timeout.
CONSUMER_FETCH_OVERDUE_MARGIN_MS = 2_000
# Iterating a consumer polls in slices of at most this, so that an infinite
# consumer_timeout_ms (the default) still returns to group work between them.
CONSUMER_ITERATION_POLL_SLICE_MS = 1_000
# Heartbeats per session timeout until the coordinator says how often to send
# them (its heartbeat interval then rules): several may be lost in a session.
GROUP_HEARTBEATS_PER_SESSION = 5
# How long a closing member waits for the answer to its leave heartbeat; if none
# comes, the session timeout removes it.
GROUP_LEAVE_TIMEOUT_MS_MAX = 5_000
# A client's send never blocks: when its request cannot be queued (with several
# routers none is up; with one, the broker refused the handshake or stopped reading)
# it waits this long for a connection to take it, then fails with unavailable.
CLIENT_ROUTER_CONNECT_WAIT_MS = 1_000
# A client's ZMQ heartbeats to its routers: a connection whose router stops answering
# them (a stopped or hung process, a host gone without a FIN, a pod behind a Service
# replaced) is dropped within the timeout and connected again, instead of queueing
# requests to it until TCP's keepalive (hours). With several routers the requests go
# to the others meanwhile (ZMQ_IMMEDIATE: only a connection whose handshake completed
# takes requests). libzmq's I/O thread answers them, so a router busy in Python is
# not dropped.
CLIENT_ROUTER_HEARTBEAT_IVL_MS = 1_000
CLIENT_ROUTER_HEARTBEAT_TIMEOUT_MS = 5_000
# Handshake-failure events a connection reads from its monitor per look (a client
# with the wrong server key fails once per reconnect).
CLIENT_HANDSHAKE_EVENTS_READ_MAX = 64
# Until its first reply, a request's wait looks this often at whether the broker
# refused the handshake (libzmq's verdict comes within milliseconds, and the
# refused request would otherwise wait out its whole timeout).
CLIENT_HANDSHAKE_CHECK_MS = 100
# A connection whose router has not shaken hands this long after it was made asks,
# once, whether anything listens at the router's address (client/connect_probe.py):
# a refused TCP connect is then logged at WARNING at once, as Kafka's clients log
# "Connection ... could not be established", instead of being found only at the
# request's timeout. The probe waits this long at most for the refusal (loopback's
# comes within microseconds; a slower one is not reported).
CLIENT_CONNECT_PROBE_AFTER_MS = 500
CLIENT_CONNECT_PROBE_WAIT_MS = 20
# A wait for a reply that its caller may give up (a group heartbeat, once a commit
# was refused as an unknown member's: its answer may never come, lost with a
# coordinator that restarted) looks this often whether it has been given up.
CLIENT_GIVE_UP_CHECK_MS = 50
# Requests a connection gave up waiting for, remembered so that their late
# replies are dropped instead of kept for good (a long-lived Admin's timeouts).
CLIENT_ABANDONED_REQUESTS_KEPT = 1_000

# --- Direct produce and fetch (client/direct_routes.py, shards/shard_server.py) -----
# Sockets a client keeps to shards' direct sockets (one per shard it writes to or
# reads from); partitions of shards past this go through the router.
CLIENT_DIRECT_SOCKETS_MAX = 64
# A direct socket's ZMQ heartbeats: a shard that stops answering them is noticed
# within the timeout even when no FIN arrives (a process's death sends one at once).
DIRECT_HEARTBEAT_IVL_MS = 250
DIRECT_HEARTBEAT_TIMEOUT_MS = 1_000
# A shard's ipc:// direct socket pings its clients this often, and drops one that
# sends nothing for CLIENT_REPLIES_STALLED_MS_MAX (a frozen process; TCP's
# counterpart is TCP_MAXRT). Rare: an idle broker's wake-ups are counted (issue 13).
DIRECT_IPC_HEARTBEAT_IVL_MS = 10_000
# How often a client asks the router for a topic's leaders' direct addresses at
# most: after a failure at a direct socket it asks again, no sooner than this;
# while the answers name no new leader (an election), the wait doubles up to the max.
CLIENT_METADATA_REFRESH_INTERVAL_MS_MIN = 100
CLIENT_METADATA_REFRESH_INTERVAL_MS_MAX = 1_000   # Kafka's retry.backoff.max.ms
# Monitor events a client reads per direct socket per receive (bounded loop).
CLIENT_MONITOR_EVENTS_PER_READ_MAX = 16
# Replies a client's connection reads from its sockets per poll before handing
# the first out (bounded loop; the rest wait for the next call).
CLIENT_REPLIES_PER_DRAIN_MAX = 1_000

# --- Router (router/) ------------------------------------------------------
# Admin requests, and apart from them topic look-ups, queued for the router's admin
# bridge threads (router/admin_bridge.py); more are answered tooManyRequests. This
# also bounds the topics with requests held at once.
ROUTER_ADMIN_JOBS_QUEUED_MAX = 1000
# The router's threads that answer admin requests, each making one control call
# through Ray at a time: this many clients are answered at once (each client's
# requests in order), so that one waiting for a dead shard holds up no other. As
# many as the controller's query threads: more would only queue in Ray.
ROUTER_ADMIN_THREADS = CONTROLLER_QUERY_THREADS
# The router's threads that relay changes (topics created, deleted, altered or
# grown; shards added, removed or moved), apart from the ROUTER_ADMIN_THREADS that
# answer queries and metadata: the controller runs changes one at a time on its
# one CHANGE_GROUP thread, and one can wait CHANGE_SHARD_WAIT_S for a stopped
# shard, so changes relayed on the query threads took them all while they waited
# (list, describe, status and every new client's metadata then waited too). One
# thread, as the controller has: more would only wait in Ray's queue for it.
ROUTER_ADMIN_CHANGE_THREADS = 1
# Changes queued for those threads, within ROUTER_ADMIN_JOBS_QUEUED_MAX; more are
# answered tooManyRequests (retriable) naming this limit. Each may wait up to
# CHANGE_SHARD_WAIT_S behind the one before, so a change deeper than this
# would start long after its client gave up (CLIENT_REQUEST_TIMEOUT_MS_DEFAULT):
# refused early, it is retried by a client still waiting. (A change whose timeoutMs
# ran out in the queue is not made at all: router/admin_bridge.py.)
ROUTER_ADMIN_CHANGES_QUEUED_MAX = 16
# Results of those calls (replies, routing tables) the loop thread has not taken
# yet; when full, the bridge thread waits for the loop (never the other way).
ROUTER_ADMIN_RESULTS_QUEUED_MAX = 1000
# Requests for a topic the router does not know yet, held in arrival order while
# the controller is asked about it; more are answered tooManyRequests.
ROUTER_HELD_REQUESTS_PER_TOPIC_MAX = 1000
# A topic the controller did not know is answered unknownTopic this long without
# asking again, so a client retrying a misspelt name costs no control calls; a
# topic created meanwhile is known after the next routing refresh anyway.
ROUTER_UNKNOWN_TOPIC_TTL_S = 1.0
ROUTER_UNKNOWN_TOPICS_REMEMBERED_MAX = 10_000
# Messages the loop thread reads from one socket before it serves the others:
# one busy client or shard cannot starve the rest.
ROUTER_SOCKET_READS_PER_ROUND_MAX = 256
# Connection events (up, down) of one shard connection handled per round.
ROUTER_MONITOR_EVENTS_PER_ROUND_MAX = 64
# The loop thread's longest wait in poll: how late it notices stop() and its sweep.
ROUTER_POLL_TIMEOUT_MS = 200
# How often the loop forgets fetch replies already written to their clients
# (plinth/unsent_replies.py) besides when it next sends to the same client.
ROUTER_UNSENT_SWEEP_INTERVAL_S = 1.0
# How long stop() waits for each router thread; the admin bridge may be inside a
# control call (up to CONTROL_CALL_TIMEOUT_S), and is a daemon thread.
ROUTER_STOP_WAIT_S = 10.0

# --- Shard loop (shards/shard_server.py and what is split out of it) ----------
# Control calls queued for a shard's loop thread (ShardServer.call); a caller
# beyond it waits, up to its timeout, instead of growing the queue.
SHARD_COMMANDS_QUEUED_MAX = 1000
# The loop's poll wakes at least this often with nothing to do, so timers
# (retention, rate samples) run on an idle shard.
SHARD_IDLE_POLL_MS = 1000
# How often the loop samples its counters for the records/s and bytes/s rates.
SHARD_STATS_SAMPLE_INTERVAL_S = 1.0
# Rates average over this many samples (the sample deque holds one more).
SHARD_STATS_RATE_WINDOW_SAMPLES = 10
# A shard restarted while its previous process is still dying waits this long
# for the data dir lock, polling at this interval, then fails to start.
DATA_DIR_LOCK_WAIT_S_MAX = 30.0
DATA_DIR_LOCK_POLL_MS = 50
# plinth serve refuses to start on a data dir whose file system has less free: Ray's
# session files and the logs go there (Ray itself timed out after a minute instead).
DATA_DIR_FREE_BYTES_MIN = 64 * MiB
# A shard refuses produces that would leave its file system with less free
# (shards/disk_reserve.py; plinth serve --produce-free-bytes-min), as Redpanda's
# storage_min_free_bytes (5 GiB there): room for the deletes that free a full disk,
# whose saves write new files first, and, at twice DATA_DIR_FREE_BYTES_MIN, for a
# restart of a broker its producers filled (at 16 MiB, session 39's, the start
# check refused it: session 40).
PRODUCE_FREE_BYTES_MIN_DEFAULT = 2 * DATA_DIR_FREE_BYTES_MIN
PRODUCE_FREE_BYTES_MIN_MAX = 1 << 50   # 1 PiB: the option's range (0: no reserve)
# How long the free bytes a shard last read are trusted (less what it appended since).
DISK_FREE_CHECK_INTERVAL_MS = 1000
# How long closing a shard's socket may wait to send replies still queued.
SHARD_SOCKET_LINGER_MS = 1000
# Woken parked fetches stay in the deadline heap until they reach its top;
# when the heap holds this many entries, the answered ones are dropped at once.
PARKED_HEAP_ENTRIES_MAX = 2 * PARKED_FETCHES_MAX
# Segment reads: recovery and index rebuilds read the .log file in chunks of
# this size (a larger entry is read whole), so small entries cost no syscall each.
SEGMENT_SCAN_CHUNK_BYTES = 4 * MiB
# Finding an offset scans entry headers forward from the indexed entry,
# reading up to index_interval_bytes at once, but no more than this.
SEGMENT_FIND_CHUNK_BYTES_MAX = 64 * KiB
# Recovery keeps the bytes it cuts from a segment, one file per cut (segment.py):
# at most this many per segment, the smallest earlier ones removed (logged) beyond
# it, so that a disk that tears the same segment at every restart cannot fill the
# data dir, nor push out a large cut of acknowledged entries with its small tails.
CUT_FILES_KEPT_MAX = 8
# plinth check (shards/log_check.py) says each bad entry of a segment in a line of
# its own, up to this many; the rest in one line (a disk gone bad must not bury
# every other line of the report).
CHECK_BAD_ENTRIES_SAID_MAX = 20
# ... and each file or directory the broker cannot write (shards/log_check_writable.py),
# up to this many per partition log (a read-only file system refuses every one).
CHECK_UNWRITABLE_SAID_MAX = 20
# ... and quotes at most this many characters of a damaged file's value (a producers
# snapshot's entry: shards/log_check_files.py), so that one line stays one line.
CHECK_VALUE_CHARS_SAID_MAX = 80
# Committed offsets (shards/offset_store.py): replay reads the internal log
# this much at a time, and compaction (and a replicated slot's snapshot) writes
# at most this many records, and about this many bytes of keys and values, per
# batch, far under BATCH_RECORDS_MAX and BATCH_BYTES_MAX (a record carries up to
# OFFSET_METADATA_BYTES_MAX of metadata: 10,000 of them would not fit a batch).
OFFSETS_REPLAY_READ_BYTES = 8 * MiB
OFFSETS_COMPACT_BATCH_RECORDS_MAX = 10_000
OFFSETS_COMPACT_BATCH_BYTES_MAX = 4 * MiB
# Replicated offsets (a partition of __consumer_offsets per group slot): a commit
# or a read of offsets is answered once the slot's high watermark passes what it
# wrote or saw, waiting at most this long (then requestTimedOut, before the
# client's own request timeout), and at most this many such replies wait per shard
# (beyond: tooManyRequests, retriable; each holds a reply's envelope).
GROUP_REPLY_WAIT_MS_MAX = 20_000
GROUP_REPLIES_WAITING_MAX = 10_000
# How often a shard checks that it still leads the slots whose groups it keeps
# (a change of leader is applied at once when the controller's record arrives;
# this catches one applied inside the shard, e.g. an in-sync answer).
GROUP_SLOTS_CHECK_INTERVAL_MS = 100
# A replicated slot's log cannot be compacted in place (its replicas would
# differ), so it is bounded by time: its leader appends a snapshot of every live
# record each OFFSETS_SNAPSHOT_INTERVAL_MS (while it has groups), its segments
# roll each OFFSETS_SLOT_SEGMENT_MS, and every replica deletes segments older than
# OFFSETS_SLOT_RETENTION_MS, which always keeps the last complete snapshot and
# what follows it (the relation below). The log holds about a day of commits; a
# slot without a leader for longer than its retention loses its offsets.
OFFSETS_SNAPSHOT_INTERVAL_MS = 3600 * 1000
OFFSETS_SLOT_SEGMENT_MS = 3600 * 1000
OFFSETS_SLOT_RETENTION_MS = 24 * 3600 * 1000

# --- Controller and shard actors (control/, shards/actor.py) -----------------
# How long ``plinth serve`` waits for the controller to start every shard, open
# their partitions and finish a change of shards a crash interrupted. Each call
# inside has its own bound; this one stops a server from hanging at start if
# something slips past them (it is generous: a start may finish many moves).
CONTROLLER_START_WAIT_S = 900.0
# Beyond a shard's own grace period, how long the controller waits for the
# shard's answer to shutdown; the server waits twice as long beyond it for the
# controller's answer (which comes after the shards').
SHUTDOWN_CALL_MARGIN_S = 5.0
# After the controller's shutdown, how long a stopping server waits for Ray to list
# and end shard actors the controller did not. When every process of the service
# gets SIGTERM at once (systemd's default stop), Ray's
# GCS is stopping too and the listing hung for its 60 s request timeout; past this
# bound the server goes on, and its process reaper ends any shard actor left.
SHUTDOWN_SHARD_SWEEP_S = 5.0
# A router that stops tells the controller and waits this long for the answer
# (its process is about to exit; the controller may be gone).
ROUTER_STOPPED_WAIT_S = 10.0
# After a crash, Ray may still hold the dead broker's controller name for a
# moment; a new server retries taking it this long, this often.
CONTROLLER_NAME_WAIT_S = 30.0
CONTROLLER_NAME_RETRY_INTERVAL_S = 0.2
# Likewise for a shard actor's name (shards/shard_handle.py): a controller that
# ended a leftover shard of another broker creates its own under the same name.
SHARD_NAME_WAIT_S = 30.0
SHARD_NAME_RETRY_INTERVAL_S = 0.2
# Unix socket paths are limited to 107 bytes and Ray appends about 70 to its
# temp dir: a longer data dir gets Ray's session files in the system temp dir.
RAY_TEMP_DIR_BYTES_MAX = 36
# Ray's session directories (``<data dir>/ray/session_<date>_<pid>``, 200-300 KB of
# Ray's logs each) kept at a start of the embedded Ray, the new one included: each
# start adds one, and a broker restarted in a supervisor's crash loop would grow the
# data dir without bound. The newest are kept: they say why the last starts ended.
RAY_SESSIONS_KEPT_MAX = 3
# How long --ray-address (plinth serve, plinth router) may take to accept a TCP
# connection before the server says nothing is there: Ray's own join retries for
# minutes and does not heed SIGTERM meanwhile.
RAY_ADDRESS_CONNECT_WAIT_S = 5.0
# How long ray.init may take to join the cluster at --ray-address once something
# there accepted the TCP connection (a healthy cluster takes a few seconds). Past
# it the process says why in one line and exits: Ray retries for minutes, heeding
# no SIGTERM, when no GCS answers there, or when a local-only cluster (nodes on
# 127.0.0.1) is joined outside Ray's local-only mode (it swaps 127.0.0.1 for the
# machine's address, where nothing listens).
RAY_JOIN_WAIT_S = 60.0
# The share of its node's pin resource (``plinth-node:<name>`` or Ray's
# ``node:<address>``) each shard actor requires: enough to tie it to that node,
# small enough that any number of shards (up to SHARDS_MAX) fit on one node.
SHARD_NODE_RESOURCE_SHARE = 0.001

# --- Storage bounds (timestamps, open files, producer ids) --------------------
# Kafka's topic configs message.timestamp.before.max.ms and .after.max.ms: how far
# before and after the shard's clock a record's timestamp may be (plinth/topics.py).
# Before: unlimited (Kafka's Long.MAX), so old data can be loaded with its own
# times. After: one hour, enough for clocks that disagree between hosts, while a
# record cannot claim a far future that readers and time lookups would believe.
MESSAGE_TIMESTAMP_BEFORE_MS_MAX_DEFAULT = 2**63 - 1
MESSAGE_TIMESTAMP_AFTER_MS_MAX_DEFAULT = 3_600_000
# The smallest segment.bytes and segment.ms a topic may set. A segment is three
# files, and a topic of 4 KiB or 1 ms segments made one per produce (500 produces:
# 499 more open files). 1 MiB and a minute bound the files of a partition by its
# bytes and its age. LogConfig itself still takes SEGMENT_BYTES_MIN and 1 ms, for tests.
SEGMENT_BYTES_CONFIG_MIN = 1 * MiB
SEGMENT_MS_CONFIG_MIN = 60_000
# Files of rolled segments one shard keeps open, shared by its partitions
# (shards/segment_files.py); the least recently read is closed first, and opened
# again (one open(), its indexes stay in memory) when next read. Active segments
# stay open besides, one per partition. A catching-up reader stays in one
# segment for segment.bytes, so a few hundred open files serve hundreds of them.
SEGMENT_FILES_OPEN_MAX = 256
# Open files a shard keeps for everything but its partitions' segments: its sockets,
# the Ray worker's own files, the short-lived opens of indexes and snapshots. A
# partition holds one (its active segment); a shard refuses to open a partition
# beyond its process's open-file limit less these and SEGMENT_FILES_OPEN_MAX
# (shards/file_budget.py), where it used to open until one failed with EMFILE.
SHARD_FILES_RESERVED = 512
# `plinth serve` warns at start when the open-file limit its shards will run under
# leaves room for fewer partitions per shard than this (shards/file_budget.py):
# under `ulimit -n 256` it said "ready" and then refused every create, the only
# hint Ray's own line (tester T-fd, session 45). Kafka's guides ask for 100,000.
SHARD_PARTITIONS_ROOM_WARN_MIN = 1_000
# Places (segment file, position) where one partition log's reads found corrupt
# data, remembered so that each is logged once (shards/partition_log.py): a
# consumer retrying a bad offset in a loop adds no line. Beyond this many, the
# place found longest ago is forgotten, and logged again if it is read again.
CORRUPT_READ_PLACES_LOGGED_MAX = 64
# One-copy partitions whose writes move from one shard to another in one seal call,
# one open call and one save of the metadata (plinth shards add/remove): one of each
# per partition took 20-50 ms each, minutes of the controller's thread for 2,000
# partitions. Writers of a batch being moved retry for as long as it takes.
PARTITION_MOVES_PER_SAVE_MAX = 256
# How long an idempotent producer must stay silent on a partition before the shard
# may forget it to make room for a new one (Kafka's producer.id.expiration.ms, a
# broker config there too). With PRODUCERS_PER_PARTITION_MAX remembered, a new
# producer id is refused (TooManyProducersError, retriable) rather than forget
# one seen more recently: cycling producer ids cannot make a retry a duplicate.
PRODUCER_ID_EXPIRATION_MS = 24 * 3600 * 1000

# --- Router budgets per client (frames, held requests, in flight, unsent) ----
# Requests held while the router looks up their topic (router/held_requests.py)
# count toward their client's CLIENT_REQUESTS_IN_FLIGHT_MAX, and their bytes
# (every frame) toward a per-client share and a per-router budget; beyond them
# a request is answered tooManyRequests at once. Without these a client could
# make the router hold a thousand 64 MiB frames per unknown topic.
CLIENT_REQUEST_BYTES_HELD_MAX = 32 * MiB
ROUTER_REQUEST_BYTES_HELD_MAX = 256 * MiB
# Requests held in all: bounds the objects that hold them, whatever their bytes.
ROUTER_REQUESTS_HELD_MAX = 10_000
# A request held this long (the controller does not answer the look-ups and
# the refreshes) is answered unavailable, which a client retries; its topic
# is looked up again on every routing refresh meanwhile.
ROUTER_REQUEST_HELD_S_MAX = 10.0
# A client connection to the router whose queued replies make no progress for
# this long (its receive window stays shut: it does not read; or its host is
# gone) is closed by the kernel (TCP_USER_TIMEOUT, set through ZMQ_TCP_MAXRT),
# which frees the replies it held. A client stalled this long has given up on
# its requests anyway.
CLIENT_REPLIES_STALLED_MS_MAX = 30_000
# The bytes one client's fetches at the shards may ask for in all
# (router/requests_in_flight.py): a shard's replies to the router wait in one
# queue, so a client asking for gigabytes it never reads would delay every other
# client's replies from that shard. 128 MiB: 32 partitions' default fetches
# parked at once per connection, a fraction of a second of the hop's throughput.
CLIENT_FETCH_BYTES_IN_FLIGHT_MAX = 128 * MiB
# What a fetch counts at least, however small its maximum (a fetch brings back
# its first entry whole): the limit's share of each of a client's requests in
# flight, so that small fetches meet the count limit first, as before.
FETCH_BYTES_COUNTED_MIN = CLIENT_FETCH_BYTES_IN_FLIGHT_MAX // CLIENT_REQUESTS_IN_FLIGHT_MAX

# --- Access (ACLs, quotas) -----------------------------------------------------
# A client may send this long's worth of its quota at once before it is slowed
# (Kafka measures rates over samples of 1 s), so one large batch of a client
# within its quota on average is never throttled.
QUOTA_BURST_MS = 1_000
# The longest a router holds a throttled client's reply or request: well under
# the clients' default request timeout, so a throttled request is never taken
# for lost and retried (a retry would only add load).
QUOTA_THROTTLE_MS_MAX = 5_000
# Requests (fetches, acks=0 produces) a router holds for one client connection
# over its quota, and the payload bytes it holds for all (acks=0 produces carry
# their batch); beyond them a request gets tooManyRequests, as beyond the
# in-flight limit. Held headers are small; the bytes bound the batches.
QUOTA_REQUESTS_HELD_PER_CLIENT_MAX = 256
QUOTA_HELD_PAYLOAD_BYTES_MAX = 64 * MiB
# Replies and requests a router holds for throttled clients, in all: about
# 0.5 KiB each. A reply beyond it is relayed at once (a quota slows, it never
# fails a request), a request gets tooManyRequests.
QUOTA_HELD_MAX = 100_000
# Client connections of keys with a quota that a router remembers, to meter
# their replies; the least recently active is forgotten first (its replies
# pass unmetered until its next request).
QUOTA_CLIENTS_TRACKED_MAX = 10_000
# fetchOffsets requests whose answers the router cuts to what the client may
# consume, waiting for their shard; more get tooManyRequests. An entry older
# than the TTL waits for an answer that will not come (its shard restarted) and
# is dropped when the table is full; a late answer then gets unavailable.
ACL_OFFSETS_FILTERS_PENDING_MAX = 10_000
ACL_OFFSETS_FILTER_TTL_S = 60.0

# --- The cluster's internal hop and the server's lifecycle --------------------
# Stopping a shard waits this long for its ZAP handler thread (it answers one
# short request at a time, so it stops at once unless something is wrong).
CLUSTER_ZAP_STOP_WAIT_S = 5.0
# A server some of whose shards do not serve (their node is down) says which,
# and checks again, this often until every shard serves and it prints ready.
NOT_SERVING_RECHECK_INTERVAL_S = 5.0
# The process reaper (plinth/process_reaper.py), once the server is gone: its
# processes get SIGTERM and this long to exit (GCS and raylet exit in well
# under a second), then SIGKILL. Short: nobody is waiting on them any more.
REAPER_TERM_GRACE_S = 2.0
# Rounds of scan-and-signal (one SIGTERM, then SIGKILL), each waiting up to
# the grace period: a process started while the first ones were ending is
# found in the next round.
REAPER_ROUNDS_MAX = 4
# How often the reaper checks whether the processes it signalled are gone.
REAPER_POLL_INTERVAL_S = 0.05
# While the server lives, the reaper lists /proc this often, and reads the
# stat of each process new since, to remember the server's descendants (about
# a millisecond per scan). A process started and orphaned within one interval
# before the server dies is missed unless it carries the mark.
REAPER_SCAN_INTERVAL_S = 1.0
# A server that stops normally waits this long for its reaper to finish.
REAPER_EXIT_WAIT_S = REAPER_TERM_GRACE_S * REAPER_ROUNDS_MAX + 5.0
# The controller's and each shard's own log file (plinth/actor_logs.py): rotated
# at this size, this many older files kept, so a chatty shard (a flapping
# follower logs each failed fetch) cannot fill the data disk with its log.
ACTOR_LOG_BYTES_MAX = 10 * 1024 * 1024
ACTOR_LOG_BACKUPS_MAX = 3

# --- Consumer group bounds ------------------------------------------------------
# Groups one shard coordinates: those with members and those whose committed
# offsets it keeps. A group's shard is a public hash of its name, so one client
# can aim every group it makes at one shard; this bounds that shard's memory.
# A new group beyond it is refused with tooManyGroups. A group with neither
# members nor committed offsets leaves at once, so this counts real groups.
GROUPS_PER_SHARD_MAX = 10_000
# Members one client key may have in one group: one tenant cannot fill a group
# that another tenant's consumers use (more are refused with
# groupMaxSizeReached). Clients without a key (no CurveZMQ) cannot be told
# apart; they share the group's GROUP_MEMBERS_MAX.
GROUP_MEMBERS_PER_CLIENT_KEY_MAX = 500
# Members of every group of one shard: each keeps its subscription and its
# partitions, so this bounds the shard's memory whatever the number of groups.
GROUP_MEMBERS_PER_SHARD_MAX = 100_000
# Members' session ends and empty groups' offset expiries live in heaps
# (shards/deadlines.py) where a key that went away keeps a stale entry until it
# reaches the top. A heap holding twice as many entries as live keys, and at
# least this many, drops every stale one at once: memory stays bounded and a
# clean-up costs O(1) per change on average.
GROUP_DEADLINE_HEAP_ENTRIES_MIN = 1_000
# Members removed for silence in one loop round: a mass expiry (a network
# partition, a client crash with many members) is spread over rounds.
GROUP_MEMBERS_EXPIRED_PER_ROUND_MAX = 1_000
# The committed offsets of a group without members are deleted this long after
# its last commit or after its last member left, whichever is later (Kafka's
# offsets.retention.minutes: 7 days).
OFFSETS_RETENTION_MS = 7 * 24 * 3600 * 1000
# Groups whose offsets expire in one loop round: one batch of deletion records,
# one fsync.
GROUPS_DELETED_PER_ROUND_MAX = 1_000
# Assignment work (shards/assignors.py) is done in steps of this many units (a
# unit: one partition or member looked at); a step takes well under a
# millisecond, so the loop can stop between any two.
GROUP_ASSIGNMENT_STEP_UNITS = 256
# Loop time for assignment work per round, the heartbeats' and the timer's
# together; a large group's assignment goes on in the next rounds. (A heartbeat
# always runs one step of its own group's, so the round may run over by a step
# per heartbeat.)
GROUP_ASSIGNMENT_ROUND_MS = 2
# The client key a router forwards with a group request: the client's CurveZMQ
# public key, 32 bytes in Z85 text; empty for a client without one.
CLIENT_KEY_TEXT_BYTES = 40

# --- Kafka's classic group protocol (shards/classic_group.py) -----------------
# Classic groups share GROUPS_PER_SHARD_MAX, GROUP_MEMBERS_MAX,
# GROUP_MEMBERS_PER_CLIENT_KEY_MAX and GROUP_MEMBERS_PER_SHARD_MAX with Plinth's
# own groups (each coordinator counts its own). A member that was told its member
# id (MEMBER_ID_REQUIRED, KIP-394) and has not rejoined yet counts as a member:
# ids handed out are memory too. Held requests (joins and syncs waiting for the
# group) are at most one per member, so the member bounds bound them too; a
# member's assignment is bounded by its group's (CLASSIC_GROUP_ASSIGNMENT_BYTES_MAX:
# a member may be alone in its group).
#
# How long a new group waits for more members before its first generation
# (Kafka's group.initial.rebalance.delay.ms): consumers started together land
# in one generation instead of one rebalance each. The coordinator takes it as
# a parameter (tests pass a short one).
CLASSIC_INITIAL_REBALANCE_DELAY_MS = 3_000
# A member's rebalance timeout (Kafka's max.poll.interval.ms on the Java
# client) bounds how long its group's joins are held. Clients may send up to
# 2**31-1 (Kafka Streams did); a larger one is taken as this, so that no held
# join, and no member that stopped polling, keeps a group waiting longer.
CLASSIC_REBALANCE_TIMEOUT_MS_MAX = 30 * 60 * 1000
# The longest session a Kafka client's member may ask for: Kafka's default
# group.max.session.timeout.ms (30 minutes), above Plinth's own clients' bound
# (SESSION_TIMEOUT_MS_MAX). Teams run 10-minute sessions; with Plinth's bound
# their consumers were refused INVALID_SESSION_TIMEOUT and never got a partition.
# The shortest is Plinth's SESSION_TIMEOUT_MS_MIN, below Kafka's 6 s.
CLASSIC_SESSION_TIMEOUT_MS_MAX = 30 * 60 * 1000
# A new member's join is held until its group's rebalance completes; it has no
# session yet (it cannot heartbeat without its member id). Kafka drops it after
# this long (group.classic.new.member.join.timeout.ms), so that clients that
# timed out and retried do not leave defunct members in a long rebalance.
CLASSIC_NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000
# A member's protocols (assignor names) and their metadata (its subscription),
# in bytes, names and protocol type included. The leader's join answer carries
# every member's metadata, so a full group's answer must fit a frame (checked
# below); the Java consumer's subscription to a few hundred topics is a few KiB.
CLASSIC_MEMBER_PROTOCOLS_MAX = 16
CLASSIC_MEMBER_METADATA_BYTES_MAX = 64 * KiB
# The leader's assignments for one generation, every member's together: what
# the group keeps until the next generation. More is refused as Kafka refuses
# a group record too large for its log (UNKNOWN_SERVER_ERROR, then a rebalance).
CLASSIC_GROUP_ASSIGNMENT_BYTES_MAX = 16 * MiB
# Metadata and assignments of every classic group of one shard: what one
# client making many members with maximal metadata could make a shard hold.
# Joins beyond it are refused as retriable (COORDINATOR_NOT_AVAILABLE).
CLASSIC_GROUP_BYTES_PER_SHARD_MAX = 512 * MiB
# A client id and host kept per member for describe; longer ones are cut
# (Kafka's are strings of up to 32 KiB); the member id is made from at most
# this much of the client id or group instance id, then a random UUID.
CLASSIC_CLIENT_ID_CHARS_MAX = 255
# Group instance ids (static membership) are names; a longer one is refused.
CLASSIC_GROUP_INSTANCE_ID_BYTES_MAX = 249
# Deadlines (sessions, rebalances, syncs) handled by one tick: a mass expiry
# is spread over loop rounds.
CLASSIC_DEADLINES_PER_TICK_MAX = 1_000


# --- Replication: the protocol (shards/replication.py, control/leadership.py) ---
# A follower that has not caught up with its leader's log end for this long
# leaves the in-sync set (Kafka's replica.lag.time.max.ms, 30000 there; shorter
# here, so that acks="all" stalls less after a follower dies).
REPLICA_LAG_TIME_MS_MAX_DEFAULT = 10_000
# A leader's in-sync change (alter_in_sync) that no answer or newer leadership
# record has settled after this long is offered again: the controller's answer
# may have been lost. Until it is settled the leader computes the high
# watermark on the union of both sets (KIP-497), so waiting is always safe.
IN_SYNC_CHANGE_RETRY_MS = 2_000

# --- Replication: the shard's data path (replica fetches, acks="all") ----------
# A follower's fetch parks at the leader's log end this long: short enough that a
# follower notices a silent leader soon, long enough that an idle partition costs
# two fetches a second.
REPLICA_FETCH_WAIT_MS = 500
# Entries per follower fetch: as a consumer's default fetch; one whole entry is
# always sent, however large.
REPLICA_FETCH_BYTES_MAX = 4 * MiB
# A follower whose file system has less free than one fetch's entries says so in
# each fetch (``appendFailed``, as after a refused append), and its leader keeps
# it out of the in-sync set: otherwise a follower at the log end with a full disk
# (a leader moved off it, control/disk_moves.py) is taken in, and acks="all"
# produces wait on it until its first append fails (0.2-0.5 s; tester T-fd3). Said
# by what it has free, not by a failure, so that it comes back once there is room
# even if no entries come (a partition refusing produces for too few in sync).
REPLICA_DISK_ROOM_BYTES_MIN = REPLICA_FETCH_BYTES_MAX
# A follower fetches all the partitions it follows on one leader in one request
# (Kafka's one fetch per broker pair), this many at most: the request, with
# every topic name at its longest, fits a header (HEADER_BYTES_MAX); a follower
# of more sends the rest in its next fetches, those with entries waiting first.
REPLICA_FETCH_PARTITIONS_MAX = 128
# The entries of all the partitions in one answer (each partition's at most
# REPLICA_FETCH_BYTES_MAX): Kafka's replica.fetch.response.max.bytes. A
# partition whose entries would pass it waits for the next fetch, unless it
# is the answer's first (one whole entry always goes).
REPLICA_FETCH_ANSWER_BYTES_MAX = 16 * MiB
# Fetches a follower has in flight to one leader, each with other partitions: a
# partition whose fetched entries became durable is fetched again at once (the
# leader's acks="all" waits for that fetch) even while a fetch of the others
# waits parked at the leader.
REPLICA_FETCHES_IN_FLIGHT_MAX = 4
# A follower's fetch unanswered this long after its wait ended is given up: the
# leader or the path to it is gone, and the follower reconnects and retries.
REPLICA_FETCH_TIMEOUT_MS = 5_000
# A follower retries a failed fetch (refused, lost, leader unknown) after a
# backoff doubling from the first to the last, so a dead leader costs a few
# requests a second at most.
REPLICA_FETCH_BACKOFF_MS_MIN = 50
REPLICA_FETCH_BACKOFF_MS_MAX = 2_000
# How often a leader looks at its followers' lag (in-sync set changes).
REPLICA_LAG_CHECK_INTERVAL_MS = 200
# acks="all" produces waiting for the high watermark, per shard: each holds a
# reply's envelope; beyond it a produce is refused (retriable) at once.
ACKS_ALL_PENDING_MAX = 20_000
# An acks="all" produce whose records the high watermark has not passed after
# this long is answered (requestTimedOut, or notEnoughReplicas if the in-sync set
# is too small): before the client's own request timeout, never left hanging.
ACKS_ALL_WAIT_MS_MAX = 20_000
# A deleteRecords of a replicated partition is answered once every in-sync follower
# has adopted the new log start offset (as Kafka's DeleteRecords waits for its
# replicas' low watermarks), so that a failover never starts lower; after this long
# it is answered requestTimedOut (the leader's floor is saved all the same), before
# the client's own request timeout. At most this many wait per shard (tooManyRequests).
DELETE_RECORDS_WAIT_MS_MAX = 20_000
DELETE_RECORDS_PENDING_MAX = 1_000
# In-sync changes a shard has asked the controller for and not yet heard back on
# (one per partition at most; the rest wait for the next lag check).
IN_SYNC_REQUESTS_PENDING_MAX = 1_000

# --- Replication: control (placement of replicas, factors, leases) --------------
# A partition's copies. Each is a shard that fetches every record the leader
# appends (a fetch stream the leader serves, an fsync stream on its node); 5
# copies survive 4 losses, more than min.insync.replicas can make use of. A
# factor is also bounded by the shards there are (distinct replicas).
REPLICATION_FACTOR_MAX = 5
# The default factor picks min(this, nodes) on a cluster of several nodes:
# Kafka's recommended 3 (survives one loss during another's maintenance).
REPLICATION_FACTOR_DEFAULT_MULTI_NODE = 3
# A router that a shard answers notLeader, or whose shard for a request is down,
# asks the controller for a new routing table at once, but not more often than
# this: while a leader changes, every request to its partitions fails so, and
# each refresh is a Ray call that builds the whole table.
ROUTING_REFRESH_ON_DEMAND_INTERVAL_S = 0.2
# The lease on leadership: the controller's lease thread (control/leader_lease.py)
# has it ping every replica's shard this often, while a replicated partition
# exists (control/controller.py, check_leaders). A leader whose
# actor Ray reports dead is replaced at once; one that does not answer within
# the ping timeout that many checks in a row is replaced too (a paused process,
# a lost node: Ray's node health checks take tens of seconds). Issue 12's
# failover target is 3 s: with these a lost leader is replaced 1-1.5 s after
# the first ping it misses (0.75 s and 0.5 s measured 3.3 s p50 from a node's
# loss to the first acknowledgement). A shard busy that long (a long recovery)
# loses its leadership: safe (its records are fenced), and it follows from
# then on.
LEADER_CHECK_INTERVAL_S = 0.25
LEADER_PING_TIMEOUT_S = 0.5
LEADER_PING_MISSES_MAX = 2
# A replicated partition whose replica set moves (plinth shards add/remove) is
# sealed where every in-sync replica holds it: its leader stops taking writes,
# and the controller asks it again every SEAL_POLL_INTERVAL_MS until its high
# watermark reaches its log's end (the followers fetch the rest: a fetch or two),
# for at most SEAL_REPLICATED_WAIT_S; then the leader takes writes again and the
# command fails, naming the partition. An in-sync follower that is down holds it
# that long: the controller, busy moving, cannot take it out of the in-sync set.
SEAL_REPLICATED_WAIT_S = 10.0
SEAL_POLL_INTERVAL_MS = 20
# A preferred-leader election (electLeaders) hands a partition over: its leader
# stops taking writes (producers get the retriable notLeader and retry), and the
# controller asks it every SEAL_POLL_INTERVAL_MS until the preferred replica holds
# its whole log (an in-sync follower is a fetch or two behind), for at most
# LEADER_HANDOVER_WAIT_MS; then the leader takes writes again and that partition
# is answered preferredLeaderNotAvailable. The controller's elections wait
# meanwhile (the hand-over runs on a query thread; only its start and end, short
# calls, run on the actor thread). A leader that hears nothing more (the
# controller died) takes writes again after LEADER_HANDOVER_FENCE_MS.
LEADER_HANDOVER_WAIT_MS = 5_000
LEADER_HANDOVER_FENCE_MS = 2 * LEADER_HANDOVER_WAIT_MS
# Kafka's auto.leader.rebalance.enable: every LEADER_REBALANCE_INTERVAL_S (the
# default of plinth serve --leader-imbalance-check-interval-s, Kafka's
# leader.imbalance.check.interval.seconds) the controller runs a preferred
# election for the partitions whose preferred leader is in sync but does not
# lead, when more than LEADER_IMBALANCE_PERCENT (leader.imbalance.per.broker.
# percentage) of some shard's preferred partitions are led elsewhere.
LEADER_REBALANCE_INTERVAL_S = 300.0
LEADER_IMBALANCE_PERCENT = 10
# A leader whose disk refuses an append (a full disk: StorageError, or its reserve:
# DiskReserveRefusedError) tells the controller (``leader_disk_refused``), at most
# once per DISK_REFUSED_NUDGE_INTERVAL_MS per shard: producers retry every few
# milliseconds, and the controller needs one word. The controller hands each
# partition it leads to an in-sync replica whose disk has at least
# LEADER_MOVE_DISK_ROOM_BYTES_MIN free beyond its reserve (control/disk_moves.py);
# the room is what keeps the new leader from refusing the next batch at once.
DISK_REFUSED_NUDGE_INTERVAL_MS = 1000
LEADER_MOVE_DISK_ROOM_BYTES_MIN = 8 * MiB
# A shard whose disk refused a write within DISK_REFUSED_RECENT_S takes no partition
# moved off another's disk: shards that share one disk (or a batch bigger than the
# room) would otherwise pass partitions round between them, each refusing in turn.
DISK_REFUSED_RECENT_S = 60.0

# --- Tiered storage (shards/tier/; issue 14) -----------------------------------
# Every object-storage call is bounded: a request that has not answered within
# REMOTE_REQUEST_TIMEOUT_S is abandoned, a connection that is not made within
# REMOTE_CONNECT_TIMEOUT_S fails, and a failed call is retried at most
# REMOTE_RETRIES_MAX times within REMOTE_RETRY_TIMEOUT_S (the store client's own
# retries, for 5xx and dropped connections), so a store that is down gives
# RemoteStorageUnavailableError within about
# REMOTE_RETRY_TIMEOUT_S + REMOTE_REQUEST_TIMEOUT_S, never a hang.
REMOTE_REQUEST_TIMEOUT_S = 30.0
REMOTE_CONNECT_TIMEOUT_S = 5.0
REMOTE_RETRIES_MAX = 3
REMOTE_RETRY_TIMEOUT_S = 20.0
# Parts of a multipart upload (S3's minimum part is 5 MiB; a 1 GiB segment is 103
# parts of 10 MiB, far below S3's 10,000), and how many are in flight at once.
REMOTE_UPLOAD_PART_BYTES = 10 * MiB
REMOTE_UPLOAD_PARTS_IN_FLIGHT_MAX = 4
# A manifest is a few hundred bytes; anything bigger is not one (read whole).
REMOTE_MANIFEST_BYTES_MAX = 64 * KiB
# Index, time index, producer snapshot and leader-epoch objects are read whole.
# A 1 GiB segment's offset index at one entry per 4 KiB is 2 MiB.
REMOTE_SMALL_OBJECT_BYTES_MAX = 16 * MiB
# One entry of a partition's remote-log-metadata journal (a JSON record).
REMOTE_METADATA_ENTRY_BYTES_MAX = 64 * KiB
# Remote segments one partition's metadata may track; with 1 GiB segments this
# is 100 TiB per partition. Bounds the journal's replay and memory.
REMOTE_SEGMENTS_PER_PARTITION_MAX = 100_000
# The journal is rewritten (compacted) on open once it holds this many entries
# more than the live segments need.
REMOTE_METADATA_ENTRIES_DEAD_MAX = 10_000

# Ranged reads for one remote fetch: the chunk from the indexed entry, then at most a
# few more, each starting at least one whole entry further (an index gap wider than
# the read, or a first entry longer than it).
REMOTE_READS_PER_FETCH_MAX = 4
# Remote .log objects are read through the shard's disk cache (chunk_cache.py) in
# chunks of this size, aligned; a consumer reading in order gets this many chunks
# per ranged get (one request instead of four: object stores bill per request and
# answer each in tens of ms).
REMOTE_CHUNK_BYTES = 4 * MiB
REMOTE_READAHEAD_CHUNKS = 4
# Local disk for cached chunks unless --tier-cache-bytes says otherwise. At least
# two read-aheads (a consumer's read-ahead must not evict the chunk it is reading);
# at most 16 TiB, more than any one disk a shard would cache on.
TIER_CACHE_BYTES_DEFAULT = 1 * GiB
TIER_CACHE_BYTES_MIN = 2 * REMOTE_READAHEAD_CHUNKS * REMOTE_CHUNK_BYTES
TIER_CACHE_BYTES_MAX = 16 * 1024 * GiB
# --tier-url: an object-store URL (bucket, prefix) is short; this bounds what the
# server keeps and passes to every shard actor.
TIER_URL_BYTES_MAX = 2048
# A data dir's claim on its objects in a tier store (shards/tier/store_claim.py): the
# server renews its lease every RENEW_INTERVAL to LEASE ahead. A copy of the data dir
# started elsewhere is refused while the lease runs, so after a kill -9 a relocated
# data dir waits out at most one lease; a shard deletes only under a running lease.
TIER_CLAIM_LEASE_S = 60.0
TIER_CLAIM_RENEW_INTERVAL_S = 10.0
# How long a start waits for the store to answer its claim, and a stop for the lease's
# release: a store that hangs (accepts, never answers) held a start 30 s
# (REMOTE_REQUEST_TIMEOUT_S) and a stop 61 s, past Kubernetes' 30 s grace period
# (tester T-tier, session 42). Past the wait a start goes on (the claim is made in
# the background; deletions wait for it) and a stop leaves the lease to run out.
TIER_CLAIM_START_WAIT_S = 5.0
TIER_CLAIM_RELEASE_WAIT_S = 5.0
# Segments whose last read position the cache remembers (to see sequential reads).
REMOTE_CACHE_SEGMENTS_TRACKED_MAX = 10_000
# Drops of cached chunks (a partition deleted or moved away, segments retention
# deleted) the loop has asked of the remote reader and it has not applied yet
# (shards/tier/remote_fetcher.py); beyond them the reader empties its whole cache
# (re-reads cost a fetch; nothing is kept that should go). A topic deletion asks
# one per partition: above PARTITIONS_PER_TOPIC_MAX (checked below).
REMOTE_CACHE_DROPS_PENDING_MAX = 10_000
# The uploader (shards/tier/remote_log_manager.py). How often a shard's loop looks
# for rolled segments to upload (one in flight per partition; the next is picked as
# soon as one is done, so a backlog goes up at the store's speed, not one per tick).
REMOTE_UPLOAD_CHECK_INTERVAL_S = 1.0
# After a failed upload (store down, a file gone) the partition waits, doubling from
# MIN to MAX: a store that is down is asked about once every 30 s per partition.
REMOTE_UPLOAD_BACKOFF_MS_MIN = 500
REMOTE_UPLOAD_BACKOFF_MS_MAX = 30_000
# Jobs queued from the loop to a shard's uploader thread. At most one per
# partition is in flight, so this bounds partitions waiting, not bytes; a full
# queue makes the loop try again at its next check, never wait.
REMOTE_UPLOAD_JOBS_QUEUED_MAX = 1024
# Topic deletions whose remote objects a shard is still removing (each a
# directory under <data dir>/remote-deletions/, retried with the backoff above).
REMOTE_DELETIONS_PENDING_MAX = 10_000
# Manifests a shard found corrupt when it synced a partition with the store
# (remote_transfer.sync_with_store) are skipped; at most this many of them are
# logged per sync, so that a store full of bad objects cannot flood the log.
REMOTE_CORRUPT_MANIFESTS_LOGGED_MAX = 10
# Describe says why a tiered partition's remote view is not the store's yet with the
# last listing's error (remote_log_manager.not_listed), cut to this many characters:
# a store's error may quote a whole response, and every partition of a topic of
# PARTITIONS_PER_TOPIC_MAX may carry one.
REMOTE_NOT_LISTED_ERROR_CHARS_MAX = 300
# A follower of a tiered partition lists the store's manifests of it this often
# (its first listing at once), to learn the leader's uploads and apply local
# retention to what the store holds. Each listing is a LIST call per followed
# partition (billed per call on S3), so it is slow: local retention on a follower
# lags the leader's by at most this much.
REMOTE_FOLLOWER_REFRESH_INTERVAL_S = 300.0
# A partition's owner lists the store again when the controller asks it to cover a
# range a draining shard uploaded (RemoteLogManager.request_resync, issue 14); the
# controller asks at every status and nudge, so at most one such LIST per partition
# goes out this often (listings are billed per call); a request within it waits.
REMOTE_RESYNC_INTERVAL_S_MIN = 5 * REMOTE_UPLOAD_CHECK_INTERVAL_S
# Remote fetches (shards/tier/remote_fetcher.py): one reader thread per shard
# reads them in turn from a queue of at most REMOTE_FETCHES_QUEUED_MAX; a fetch
# beyond it is answered tooManyRequests at once (the loop never waits for the
# reader). A fetch that waited in the queue longer than REMOTE_FETCH_QUEUED_S_MAX
# is answered unavailable without reading: its client is about to give up on it.
REMOTE_FETCHES_QUEUED_MAX = 64
REMOTE_FETCH_QUEUED_S_MAX = 10.0
# A remote fetch waits at most this long for the reader (Kafka's
# remote.fetch.max.wait.ms, its default), then is answered with no records, as an
# empty fetch is, and its client fetches again: a hung store holds up no other
# partition of the client's fetch for its timeouts. The read goes on and warms the
# chunk cache (shards/tier/remote_fetch_waits.py).
REMOTE_FETCH_WAIT_MS_MAX = 500
# A fetch of an offset being read joins that read instead of queuing another, for
# at most this long after it was queued: past it the read is taken as lost (its
# answer dropped on the way back) and the next fetch queues a new one. Longer than
# any read takes (the queue's wait, then the store's bounds).
REMOTE_FETCH_JOIN_S_MAX = 60.0
# A look-up by time in object storage (ListOffsets by timestamp, Kafka's
# offsets_for_times; shards/tier/remote_time_lookup.py) waits at most this long for
# the reader, then is answered requestTimedOut (Kafka's REQUEST_TIMED_OUT, which
# its clients retry): it has no empty answer. Kafka's bound,
# remote.list.offsets.request.timeout.ms (KIP-1075), is 30 s, its clients' whole
# request timeout, because a Kafka retry reads again; here a retry joins the read
# still pending (as a fetch's does, for REMOTE_FETCH_JOIN_S_MAX), so a short bound
# loses nothing and the client hears within seconds, not by its own timeout, that
# the store is slow. 2 s: a look-up is three reads in series (the time index, the
# offset index, one chunk) where a fetch is one, so three remote fetch waits, and
# some room on loaded cores; below one store call's timeout (a hung store's answer
# comes before its own error) and below the controller's status call (its
# partition look-ups by time get this error, not "the shard did not answer").
REMOTE_TIME_LOOKUP_WAIT_MS_MAX = 2_000
# A failed remote read (a fetch or a look-up by time) is logged at WARNING at most
# once per partition per this interval (plinth/log_limit.py; the others are counted
# in plinth_remote_fetch_errors_total and the dropped lines in the next one).
REMOTE_FETCH_FAILED_LOG_INTERVAL_S = 60.0
# The reader's store answers a consumer, who waits, where the uploader's store
# may take its time: its calls are bounded tighter, so that a store that is down
# fails a fetch well within the client's request timeout.
REMOTE_FETCH_REQUEST_TIMEOUT_S = 5.0
REMOTE_FETCH_CONNECT_TIMEOUT_S = 2.0
REMOTE_FETCH_RETRY_TIMEOUT_S = 5.0
# Remote offset indexes the reader keeps in memory (each read whole, at most
# 2 MiB for a 1 GiB segment), the most recently used ones.
REMOTE_INDEXES_CACHED_MAX = 32

# --- The Kafka listener (router/kafka/listener.py) ----------------------------
# The largest request frame a Kafka client may send (Kafka's
# socket.request.max.bytes, 100 MiB): a larger or negative declared size closes
# the connection before a byte of the body is read.
KAFKA_REQUEST_BYTES_MAX = 100 * MiB
# Requests one Kafka connection may have read and not yet answered; the
# listener stops reading from it when full (Kafka mutes such a channel), so a
# pipelining client cannot make the router hold unbounded requests. librdkafka
# pipelines up to max.in.flight (default 1,000,000 in its config, 5 for the
# idempotent producer); Java's default is 5.
KAFKA_REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX = 64
# ... and their bytes (Kafka's queued.max.request.bytes, per connection here): a
# request bigger than what is left waits until the connection's earlier
# requests are answered. At least one maximal request always fits.
KAFKA_REQUEST_BYTES_IN_FLIGHT_PER_CONNECTION_MAX = 128 * MiB
# ... and of all connections together (Kafka's queued.max.request.bytes, which is
# broker-wide): a request whose bytes would pass it waits, its connection not read
# (as Kafka mutes it), until answers free room, so a thousand connections cannot
# each make the router hold a maximal request (without it, 14 raw connections
# each sending a 100 MiB produce got a 1.5 GiB router OOM-killed). A request
# always fits when nothing else is in flight, so one connection always progresses.
KAFKA_REQUEST_BYTES_IN_FLIGHT_MAX = 128 * MiB
# Kafka connections one listener keeps; beyond it a new one is closed at once
# (Kafka's max.connections). Each holds a socket and at most its in-flight bytes.
# The default of ``--kafka-connections-max``, which may set it between the bounds
# below: under 20 the login pool, one address's part of it and each user's share
# (scaled from it by kafka_connection_limits below) would round to nothing; over
# 100,000, far past what one listener's thread was ever measured serving, a typo
# (an extra zero) would rather be refused than let a flood take every file.
KAFKA_CONNECTIONS_MAX = 1000
KAFKA_CONNECTIONS_MAX_MIN = 20
KAFKA_CONNECTIONS_MAX_MAX = 100_000
# The Kafka listener's listen backlog (connections the kernel holds until accepted:
# asyncio's default), the connections it accepts per loop round at most, and how
# long it stops accepting after an accept failed at a resource limit, EMFILE above
# all (router/kafka/acceptor.py: asyncio's server logged thousands of tracebacks a
# second there, and spun two cores).
KAFKA_LISTEN_BACKLOG = 100
KAFKA_ACCEPTS_PER_ROUND_MAX = 100
KAFKA_ACCEPT_RETRY_MS = 1_000
# A Kafka connection with nothing in flight that sends no whole request for this
# long is closed (Kafka's connections.max.idle.ms, 10 minutes), so connections
# left open, or trickling a frame a byte at a time, cannot hold the connection
# slots for ever. Clients reconnect by themselves. Checked this often at most:
KAFKA_CONNECTION_IDLE_MS_MAX = 600_000
KAFKA_IDLE_CHECK_INTERVAL_MS_MAX = 10_000
# With SASL, a connection that has not logged in this long after it was accepted
# (its TLS handshake included) is closed: anyone can open one, so it may hold a
# slot only briefly (NATS's auth_timeout, RabbitMQ's handshake_timeout: 10 s). A
# TLS handshake has this long on a listener without SASL too.
KAFKA_LOGIN_TIMEOUT_MS = 10_000
# ... and at most this many connections wait for their login at once; a new one
# beyond them is closed at once. The rest of KAFKA_CONNECTIONS_MAX is kept for
# the clients that logged in, so that idle connections opened by anyone cannot
# lock them out (a tester opened 1,000 in 2.8 s and a real user was refused).
KAFKA_CONNECTIONS_BEFORE_LOGIN_MAX = KAFKA_CONNECTIONS_MAX // 4
# ... and at most this many of them from one peer IP address (any port); a new
# one beyond them is closed at once (Kafka's max.connections.per.ip, for the
# connections waiting for their login only). Without it one address reopening
# connections kept the whole pool full, and other clients' logins got in only
# as the login deadline freed slots. Not lower: every client of a load test on
# one host comes from one address (loopback), and each opens 2-3 connections
# at start (bootstrap, broker, group coordinator) that wait for their login
# together while the PLAIN checks queue on their threads; 64 lets some 20
# clients start in the same instant, and a client refused retries on its own.
KAFKA_CONNECTIONS_BEFORE_LOGIN_PER_ADDRESS_MAX = 64
# Connections one SASL user may hold logged in at one listener; the next one it
# logs in is closed just after its login. Without it one user with the least of
# grants opened all 1,000 (from 20 loopback addresses, past the per-address
# bound of the login pool) and every other user was refused. Per user, not per
# address: on loopback every local client is 127.0.0.1, and the 127.0.0.0/8
# block gives one host 16 million addresses, so a per-address bound would cut
# a local load test down and not stop that user (Kafka's max.connections.per.ip
# is unbounded by default too). A Kafka client holds 2-3 connections to a
# broker (bootstrap, the broker, its group coordinator), so 100 is some 30
# clients per user per router. Without SASL no one is known, and no bound is kept.
KAFKA_CONNECTIONS_PER_PRINCIPAL_MAX = KAFKA_CONNECTIONS_MAX // 10


def kafka_connection_limits(connections_max: int) -> tuple[int, int, int]:
    """The Kafka listener's bounds of connections waiting for their login, of those
    from one address, and of one user's, for ``connections_max`` of them in all
    (``--kafka-connections-max``): the shares above, scaled from it; the per-address
    one no more than a third of the login pool, as checked below."""
    before_login = connections_max // 4
    return (before_login, min(KAFKA_CONNECTIONS_BEFORE_LOGIN_PER_ADDRESS_MAX, before_login // 3),
            connections_max // 10)

# How long stop() waits for the listener's thread to close every connection.
KAFKA_LISTENER_STOP_WAIT_S = 10.0

# --- Process scheduling -----------------------------------------------------
# The niceness a shard actor's threads run at (plinth/process_tuning.py). Ray
# starts every worker process at niceness 15 (its worker_niceness) so that
# workers yield to its own daemons; a shard actor is a Ray worker, but it is
# the data path: at 15 its loop, ZeroMQ and fsync threads get 1/28 of a nice-0
# thread's CPU weight, so on a busy machine every record waited for the CPU
# there. 0 is what the router, the clients and Ray's daemons run at.
DATA_PATH_NICENESS = 0
# The OOM killer's preference (/proc/<pid>/oom_score_adj, -1000..1000) of a shard's
# process, as Ray gives its workers (shard and controller actors). The router's
# (plinth serve, plinth router) is raised from Ray's 0 too, never to leave a shard
# that did nothing wrong killed first while the router held the memory (tester M,
# session 40: the shard and the controller were killed before a 1.38 GB router).
# Ray's own daemons stay at 0, below them: without them every actor dies.
DATA_PATH_OOM_SCORE_ADJ = 1000
# ... and the router's (plinth serve's, plinth router's) to half that: its death
# ends the broker (every shard and the controller go with it; nothing restarts it),
# where a shard's is over within a second (Ray restarts it). The kernel adds
# oom_score_adj / 1000 of the memory limit to a process's size, so at 500 the router
# is still killed first when it holds half the limit more than a worker (tester M's
# 1.38 GB router of 1.5 GiB), but no longer as merely the largest (tester T-ext,
# session 46: a 196 MB plinth serve killed in a 620 MB limit, the broker gone).
ROUTER_OOM_SCORE_ADJ = 500
# How often a data-path process hands the heap memory it freed back to the system
# (glibc's malloc_trim; plinth/process_tuning.py). glibc keeps freed memory that is
# not at the top of its heaps: a router whose hostile clients made it hold 1 GiB
# stayed at 866 MiB after they left, 125 MiB after one trim (tester M, session 40).
# A trim with nothing to return costs about 25 us; one that returned 250 MiB, 23 ms.
HEAP_TRIM_INTERVAL_S = 30.0


# --- The Kafka listener's backend (router/kafka/backend.py, api_*.py) --------
# Requests the Kafka listener has waiting on the router at once, over all its
# connections: the DEALER's high-water marks and a semaphore.
KAFKA_BACKEND_REQUESTS_IN_FLIGHT_MAX = 4096
# How long a Kafka request waits for the router's answer (beyond a fetch's own
# wait): Kafka clients' request.timeout.ms default, 30 s.
KAFKA_BACKEND_REQUEST_TIMEOUT_MS = 30_000
# The longest a Kafka fetch may park (its max_wait_ms is capped here): Kafka
# clients ask for 500 ms; a longer wait only holds a connection's turn.
KAFKA_FETCH_WAIT_MS_MAX = 10_000
# The partitions named in the log line of an acks=0 Produce that failed (its
# connection is closed: api_produce.py); the rest are counted.
PRODUCE_ACKS0_FAILURES_NAMED_MAX = 10
# What a Kafka fetch's parked round (nothing was there at once) asks of each
# partition. A parked Plinth fetch counts its maximum (at least
# FETCH_BYTES_COUNTED_MIN) against the listener's fetch bytes in flight
# (CLIENT_FETCH_BYTES_IN_FLIGHT_MAX) until it answers, and it stays parked to the
# end of its wait even once its Kafka fetch is answered (the connection's next
# fetch takes it over): at the client's max.partition.fetch.bytes (librdkafka
# allows 10 MiB and more) a few consumers that have caught up would use that
# budget up. What arrives within one wait is small anyway, and a larger first
# batch comes whole. The counted minimum: asking less would save nothing.
KAFKA_FETCH_PARKED_PARTITION_BYTES_MAX = 512 * KiB
# One Kafka fetch's Plinth fetches in flight at once, by count and by the bytes
# the router counts for them (requests_in_flight.counted_bytes): its partitions
# go through this window, not all at once. The listener is one Plinth client
# for all its connections (CLIENT_REQUESTS_IN_FLIGHT_MAX,
# CLIENT_FETCH_BYTES_IN_FLIGHT_MAX); a librdkafka fetch of 1000 partitions sent
# at once met the fetch bytes after 256 of them, and the router refused the
# rest (600 to 744 in every fetch after), answered empty though they held records.
KAFKA_FETCH_PARTITIONS_IN_FLIGHT_MAX = 64
KAFKA_FETCH_BYTES_IN_FLIGHT_MAX = 32 * MiB
# The partitions one Kafka connection has parked at once (its fetches' waiting
# rounds). Parked fetches stay at their shards to the end of their wait even once
# the Kafka fetch is answered, holding the listener's requests and fetch bytes in
# flight; the connection's next fetch takes over those still parked at the same
# offsets rather than parking more (api_fetch.py). Before it did, each early
# answer left its fetches parked and the next parked as many again: 16
# partitions' orphans took the listener's 128 MiB within a few fetches, and
# records arriving in refused partitions waited out max_wait_ms (KafkaJS: 5 s).
# Partitions beyond this are not parked: a record arriving there is seen by the
# next fetch, after at most max_wait_ms.
KAFKA_FETCH_PARKED_PARTITIONS_MAX = 64
# How long a SyncGroup may wait for its leader's (a rebalance's own timeout
# bounds it at the coordinator; this bounds the listener's wait for the answer).
KAFKA_GROUP_SYNC_WAIT_MS_MAX = 300_000
# How long a Kafka ElectLeaders waits for the router's answer at most (the
# request's timeout_ms, Kafka's default 60 s, shortens it): as long as the
# router's own call to the controller may take, a hand-over included
# (control/controller_handle.py's elect_leaders), so that the listener does not
# give up on an election the controller still finishes.
KAFKA_ELECT_LEADERS_WAIT_MS_MAX = int(CONTROL_CALL_TIMEOUT_S * 1000) + LEADER_HANDOVER_WAIT_MS
# Partitions of a topic created with num_partitions -1 (Kafka's num.partitions).
KAFKA_TOPIC_PARTITIONS_DEFAULT = 1
# A topic whose auto-creation was refused (an ACL, the topic limit, a stopped shard)
# is not tried again for the same Kafka user within this (router/kafka/api_cluster.py):
# producers ask at every retry backoff. At most this many names are remembered.
KAFKA_AUTO_CREATE_REFUSED_TTL_S = 5.0
KAFKA_AUTO_CREATE_REFUSALS_REMEMBERED_MAX = 10_000
# Topics a Kafka DescribeLogDirs describes at once (one describeTopic each, to the
# controller): a request for every topic of a big cluster goes in rounds of this
# many, so that it does not take the whole backend's KAFKA_BACKEND_REQUESTS_IN_FLIGHT_MAX.
KAFKA_LOG_DIRS_TOPICS_IN_FLIGHT_MAX = 64
# Partitions one DescribeTopicPartitions page holds at most, whatever the request's
# response_partition_limit: Kafka's max.request.partition.size.limit default (the
# client pages on with the cursor).
KAFKA_DESCRIBE_PARTITIONS_LIMIT_MAX = 2000

# --- Console pages: message browser and consumer groups (client/console/browse.py,
# group_offsets.py, pages_browse.py, pages_groups.py) -------------------------------
# Records one browse request reads at most (what a filter scans before the page
# answers "scanned N, scan more"): bounds the console's memory and CPU per request
# whatever the topic holds. The default is what a page scans unless asked.
CONSOLE_SCAN_RECORDS_DEFAULT = 1_000
CONSOLE_SCAN_RECORDS_MAX = 10_000
# And the wall time it may spend on them (a partition whose last offsets hold no
# records would otherwise keep it waiting for records that never come).
CONSOLE_SCAN_MS_MAX = 5_000
# Records one browse page shows (each is a table row with its value's preview).
CONSOLE_PAGE_RECORDS_DEFAULT = 50
CONSOLE_PAGE_RECORDS_MAX = 500
# A key or value filter, in UTF-8 bytes: a substring search, not a document.
CONSOLE_FILTER_BYTES_MAX = 1_024
# The browse consumer's fetches: small, since a page shows few records, and short
# waits, since it reads only up to the end offsets it saw when the request began.
CONSOLE_FETCH_BYTES = 1 * MiB
CONSOLE_FETCH_WAIT_MS = 100
# How much of a key or value a row of the list shows, and the record page: a
# record may be 16 MiB, and its hex view is four times its size as text.
CONSOLE_PREVIEW_BYTES = 512
CONSOLE_RECORD_SHOWN_BYTES_MAX = 256 * KiB
# "scan more" positions one browse link carries (one per partition of the topic).
CONSOLE_BROWSE_POSITIONS_MAX = 10_000
# Partitions a browse page names, each with the error its fetches failed with
# (object storage down, a shard restarting); past that it counts the rest: a topic
# of thousands of partitions whose store is down would be a page of the same line.
CONSOLE_FETCH_ERRORS_SHOWN_MAX = 10
# Names on one page of the group list (each group costs a describeGroup) and of
# the browser's topic picker.
CONSOLE_LIST_PAGE_DEFAULT = 50
CONSOLE_LIST_PAGE_MAX = 200
# The lag chart: while a group page's live stream is open, the console samples
# that group's lag this often (client/console/lag_watch.py), and keeps this many
# samples of it (2 s x 150 = 5 minutes) for this many groups, the least recently
# sampled dropped first; it samples at most that many groups at once (a stream
# for one more is refused). Nobody watching a group, nothing is asked about it.
CONSOLE_LAG_POLL_S = 2
CONSOLE_LAG_SAMPLES_MAX = 150
CONSOLE_LAG_GROUPS_MAX = 64
# Partitions one offset reset may move (its plan travels in the apply form).
CONSOLE_RESET_PARTITIONS_MAX = 10_000

# --- The Kafka listener's TLS and SASL (router/kafka/sasl_*.py, api_sasl.py) --
# SCRAM-SHA-256 iterations a users file may hold: RFC 7677's minimum, and
# Kafka's maximum (ScramMechanism); each PLAIN login and each `kafka-user add`
# runs this many HMACs on the listener's thread, so the top is bounded.
KAFKA_SCRAM_ITERATIONS_MIN = 4096
KAFKA_SCRAM_ITERATIONS_MAX = 16384
KAFKA_SCRAM_ITERATIONS_DEFAULT = 8192
KAFKA_SCRAM_SALT_BYTES = 16
# Users one users file may hold (each may get a backend socket to the router
# once it logs in beside CurveZMQ: router/kafka/backend.py).
KAFKA_SASL_USERS_MAX = 10_000
# A SASL user name, in UTF-8 bytes (Kafka's principals are short strings).
KAFKA_SASL_USER_NAME_BYTES_MAX = 255
# One SaslAuthenticate token: a PLAIN message (two names and a password) or a
# SCRAM message (a name, nonces, a proof) fits easily; a bigger one is refused
# before it is parsed.
KAFKA_SASL_AUTH_BYTES_MAX = 4096
# The largest request a connection that has not logged in may send (Kafka's
# sasl.server.max.receive.size, 512 KiB): before a login a client costs the
# listener at most this per request, not KAFKA_REQUEST_BYTES_MAX.
KAFKA_REQUEST_BYTES_BEFORE_LOGIN_MAX = 512 * KiB
# Threads that check PLAIN passwords (a PBKDF2 each: about 13 ms at 8192
# iterations on a busy core) off the listener's event loop; more logins wait
# their turn, so a flood of them costs at most this many cores, and the
# connections already logged in keep being served.
KAFKA_SASL_PLAIN_CHECK_THREADS = 2
# A failed SASL login is answered this long after it failed, and its connection is
# closed at its next request (Kafka's connection.failed.authentication.delay.ms,
# its default), so that a client guessing passwords on one connection after
# another waits this long for each answer: a tester made 200 failed PLAIN logins
# a second. The wait is a timer on the listener's loop, holding no thread nor any
# other connection; a connection waiting it has not logged in, so it is one of the
# KAFKA_CONNECTIONS_BEFORE_LOGIN_MAX (and at most one failed login waits per
# connection: the gateway closes it at any request after the failure).
KAFKA_FAILED_AUTHENTICATION_DELAY_MS = 100

# --- Web console (client/console/) -------------------------------------------
# Where `plinth console` and the console `plinth serve` starts listen: loopback,
# where it needs no login.
CONSOLE_LISTEN_DEFAULT = "127.0.0.1:7480"
# How often the overview's sampler asks the broker for its status while a
# browser watches, and how many samples its ring buffer keeps (the charts'
# window: 120 x 2 s = 4 minutes). With nobody watching it asks nothing.
CONSOLE_SAMPLE_INTERVAL_S = 2.0
CONSOLE_SAMPLES_MAX = 120
# Every console page (and each sample of the overview's or a group's live figures)
# answers within this: its calls to the broker share one deadline, so a broker or
# shard that does not answer costs a page this long, not a request timeout per
# call in series; the page then shows what did answer, or is a 503 naming what
# did not. Longer than STATUS_CALL_TIMEOUT_S, after which the router answers that
# a shard is down: a page then shows that shard's partitions offline, not a 503.
CONSOLE_PAGE_DEADLINE_MS = 8_000
# Calls to the broker the console has in flight at once (each on an Admin of its
# own: client/console/broker_calls.py); past them a page is a 503 at once ("the
# console is waiting for N earlier requests to the broker") rather than queue
# behind pages whose browsers may have gone. The background samplers (overview,
# lag) may hold at most half of them, so that pages still get the rest. Well
# below the 40 threads of Starlette's pool that the pages run in.
CONSOLE_BROKER_CALLS_MAX = 16
# Browsers that may watch the live charts at once (each holds one SSE stream).
CONSOLE_SSE_CLIENTS_MAX = 64
# A live stream says something at least this often, so that a proxy or the
# browser does not take a quiet broker for a dead stream.
CONSOLE_SSE_KEEPALIVE_S = 15.0
# Two looks at a topic's end offsets closer than this give no partition rate (a
# rate over milliseconds is noise), and the later one does not replace the first.
CONSOLE_RATE_LOOKS_S_MIN = 0.5
# How often an open topic page's live stream sends its partition table.
CONSOLE_TOPIC_REFRESH_S = 2.0
# Topics on one page of the topic list (each costs a describeTopic).
CONSOLE_TOPICS_PAGE_DEFAULT = 50
CONSOLE_TOPICS_PAGE_MAX = 200
# A search prefix, in characters (topic names are at most 249).
CONSOLE_SEARCH_CHARS_MAX = 249
# Config entries one create or alter form may carry, and its text in characters.
CONSOLE_CONFIG_ENTRIES_MAX = 64
# Topics in one createTopics request (Admin.create_topics), created in one controller
# call: one save of the metadata and one rewrite of each shard's manifest for all of
# them, each of which costs as much as one topic's create at that many topics. Bounded
# so that the longest names fit a header (relation below) and the shards open their
# partitions well within CONTROL_CALL_TIMEOUT_S.
CREATE_TOPICS_BATCH_MAX = 100
CONSOLE_FORM_CHARS_MAX = 16_384
# How long a confirmation page's token applies its change (client/console/
# confirm_tokens.py): long enough to read a reset plan of many partitions, short
# enough that a page left open (or a token that leaked) does not apply a plan
# hours later, against offsets and configs that have moved since.
CONSOLE_CONFIRM_TOKEN_S = 600
# The auth file: entries, and scrypt's cost (n=2**14, r=8: 16 MiB and about 50 ms a
# check, which bounds a password-guessing client to a few guesses a second a core).
CONSOLE_AUTH_ENTRIES_MAX = 1000
CONSOLE_AUTH_NAME_CHARS_MAX = 64   # a token's or user's name in the auth file
CONSOLE_SCRYPT_N = 2 ** 14
CONSOLE_SCRYPT_R = 8
CONSOLE_SCRYPT_P = 1
# A failed console login (credentials given, and wrong) is answered its 401 this long
# after the check, as Kafka's connection.failed.authentication.delay.ms (100): a client
# guessing one request after another is slowed. The wait holds no thread (the event
# loop's timer), so other requests, logged in or not, are served meanwhile.
CONSOLE_LOGIN_FAILED_DELAY_MS = 100
# How long `plinth serve` waits for its console to bind before it goes on without it.
CONSOLE_START_WAIT_S = 20.0
# How long the console lets open pages and SSE streams finish when it stops.
CONSOLE_SHUTDOWN_GRACE_S = 3.0
# The console `plinth serve` starts is started again when it ends on its own
# (killed, crashed): after a backoff from MIN doubling up to MAX, so that a
# console that dies at once does not spin, and at most RESTARTS_MAX times over the
# server's life, after which the broker runs without it (and says so).
CONSOLE_RESTART_BACKOFF_S_MIN = 1.0
CONSOLE_RESTART_BACKOFF_S_MAX = 30.0
CONSOLE_RESTARTS_MAX = 5


def _relations() -> list[tuple[str, bool]]:
    """Every relation between the limits above that the code relies on, with why."""
    return [
        ("a console page shows no more records than it may scan, and scans them in less than "
         "a request timeout", CONSOLE_PAGE_RECORDS_DEFAULT <= CONSOLE_PAGE_RECORDS_MAX
         <= CONSOLE_SCAN_RECORDS_DEFAULT <= CONSOLE_SCAN_RECORDS_MAX
         and CONSOLE_SCAN_MS_MAX < CLIENT_REQUEST_TIMEOUT_MS_DEFAULT
         and CONSOLE_FETCH_WAIT_MS < CONSOLE_SCAN_MS_MAX
         and CONSOLE_FETCH_BYTES <= FETCH_BYTES_MAX
         and CONSOLE_PREVIEW_BYTES <= CONSOLE_RECORD_SHOWN_BYTES_MAX),
        ("a console page's deadline is shorter than a client's request timeout, and a "
         "browse scans within it",
         0 < CONSOLE_SCAN_MS_MAX <= CONSOLE_PAGE_DEADLINE_MS < CLIENT_REQUEST_TIMEOUT_MS_DEFAULT),
        ("the router's answer that a shard is down reaches a console page within its deadline",
         STATUS_CALL_TIMEOUT_S * 1000 < CONSOLE_PAGE_DEADLINE_MS),
        ("the console's background samplers leave pages at least half its broker calls",
         2 <= CONSOLE_BROKER_CALLS_MAX < 40),
        ("a console group page is a bounded number of describeGroups",
         CONSOLE_LIST_PAGE_DEFAULT <= CONSOLE_LIST_PAGE_MAX <= 1_000),
        ("the console's restart backoff grows to its maximum",
         0 < CONSOLE_RESTART_BACKOFF_S_MIN <= CONSOLE_RESTART_BACKOFF_S_MAX
         and CONSOLE_RESTARTS_MAX >= 1),
        ("the default SCRAM iterations are within the accepted range",
         KAFKA_SCRAM_ITERATIONS_MIN <= KAFKA_SCRAM_ITERATIONS_DEFAULT <= KAFKA_SCRAM_ITERATIONS_MAX),
        ("a SASL token holds at least a user name", KAFKA_SASL_USER_NAME_BYTES_MAX < KAFKA_SASL_AUTH_BYTES_MAX),
        ("a SASL token fits a request before the login",
         KAFKA_SASL_AUTH_BYTES_MAX < KAFKA_REQUEST_BYTES_BEFORE_LOGIN_MAX <= KAFKA_REQUEST_BYTES_MAX),
        ("a header fits a frame", HEADER_BYTES_MAX < FRAME_BYTES_MAX),
        ("a batch fits a frame", BATCH_BYTES_MAX < FRAME_BYTES_MAX),
        ("a compressed Kafka batch may hold as many bytes of records as an uncompressed one",
         BATCH_BYTES_MAX <= KAFKA_BATCH_DECOMPRESSED_BYTES_MAX),
        ("the producer's default batch is a valid batch",
         PRODUCER_BATCH_BYTES_DEFAULT <= BATCH_BYTES_MAX),
        ("a maximal fetch fits a frame", FETCH_BYTES_DEFAULT <= FETCH_BYTES_MAX < FRAME_BYTES_MAX),
        ("a client that reads always gets a whole maximal fetch through",
         FETCH_BYTES_MAX <= CLIENT_REPLY_BYTES_UNSENT_MAX <= ROUTER_REPLY_BYTES_UNSENT_MAX),
        ("one whole entry (48-byte header + batch), always returned by a fetch, fits a frame",
         BATCH_BYTES_MAX + 48 <= FRAME_BYTES_MAX),
        ("segment positions fit the offset index's UInt32",
         SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX < 2**32),
        ("a batch fits a segment", BATCH_BYTES_MAX < SEGMENT_BYTES_MAX),
        ("the default fetch wait is allowed", FETCH_WAIT_MS_DEFAULT <= FETCH_WAIT_MS_MAX),
        ("a fetch is overdue (its shard may hang) well before it is given up as lost",
         FETCH_WAIT_MS_DEFAULT + CONSUMER_FETCH_OVERDUE_MARGIN_MS
         < CLIENT_REQUEST_TIMEOUT_MS_DEFAULT / 2),
        ("a producer's requests in flight fit the router's per-client bound and the socket",
         PRODUCER_REQUESTS_IN_FLIGHT_MAX <= CLIENT_REQUESTS_IN_FLIGHT_MAX <= SOCKET_MESSAGES_HWM),
        ("a consumer's position resets in flight leave room for its fetches",
         1 <= CONSUMER_POSITION_RESETS_IN_FLIGHT_MAX <= CLIENT_REQUESTS_IN_FLIGHT_MAX // 2),
        ("an idempotent producer's oldest batch in flight on a partition is still remembered "
         "by the shard when every later one was stored",
         PRODUCER_BATCHES_IN_FLIGHT_PER_PARTITION_MAX == IDEMPOTENT_BATCHES_KEPT),
        ("a partition's batches in flight fit a producer's requests in flight",
         1 <= PRODUCER_BATCHES_IN_FLIGHT_PER_PARTITION_MAX <= PRODUCER_REQUESTS_IN_FLIGHT_MAX),
        ("the client's default time options are within their bound",
         max(CLIENT_REQUEST_TIMEOUT_MS_DEFAULT, PRODUCER_DELIVERY_TIMEOUT_MS_DEFAULT,
             PRODUCER_MAX_BLOCK_MS_DEFAULT, SESSION_TIMEOUT_MS_MAX) <= CLIENT_OPTION_MS_MAX),
        ("the CLI's longest linger plus its longest request timeout is a client time option",
         0 < CLI_LINGER_MS_MAX and CLI_LINGER_MS_MAX + CLI_REQUEST_TIMEOUT_MS_MAX
         <= CLIENT_OPTION_MS_MAX),
        ("a producer asks a topic's partition count again at most as often as its default "
         "metadata age allows", 0 < PRODUCER_METADATA_REFRESH_MS_MIN
         <= PRODUCER_METADATA_MAX_AGE_MS_DEFAULT <= CLIENT_OPTION_MS_MAX),
        ("the producer's default delivery timeout covers its linger and a request (Kafka's rule)",
         PRODUCER_LINGER_MS_DEFAULT + CLIENT_REQUEST_TIMEOUT_MS_DEFAULT
         <= PRODUCER_DELIVERY_TIMEOUT_MS_DEFAULT),
        ("the router relays changes on at least one thread, and queues them within its "
         "admin queue", ROUTER_ADMIN_CHANGE_THREADS >= 1
         and 1 <= ROUTER_ADMIN_CHANGES_QUEUED_MAX <= ROUTER_ADMIN_JOBS_QUEUED_MAX),
        ("the default max_poll_records is allowed",
         1 <= CONSUMER_POLL_RECORDS_DEFAULT <= CONSUMER_POLL_RECORDS_MAX),
        ("the default session timeout is allowed",
         SESSION_TIMEOUT_MS_MIN <= SESSION_TIMEOUT_MS_DEFAULT <= SESSION_TIMEOUT_MS_MAX),
        ("the default max_poll_interval_ms is allowed, and the shortest is no heartbeat "
         "interval's less", HEARTBEAT_INTERVAL_MS_MIN <= MAX_POLL_INTERVAL_MS_MIN
         <= MAX_POLL_INTERVAL_MS_DEFAULT <= CLIENT_OPTION_MS_MAX),
        ("unauthenticated clients' lines are limited over a positive interval, for a "
         "bounded number of sources", UNAUTHENTICATED_LOG_INTERVAL_S > 0
         and 1 <= UNAUTHENTICATED_LOG_SOURCES_MAX <= 100_000),
        ("unauthenticated clients' lines in all are bounded, at fewer than the sources "
         "remembered (else the sources' own bound would never drop one)",
         1 <= UNAUTHENTICATED_LOG_LINES_MAX < UNAUTHENTICATED_LOG_SOURCES_MAX),
        ("failed console logins write a few lines a minute at most, and their delay is "
         "short of a page's deadline", 1 <= CONSOLE_LOGIN_FAILED_LOG_LINES_MAX <= 1000
         and 0 < CONSOLE_LOGIN_FAILED_DELAY_MS < CONSOLE_PAGE_DEADLINE_MS),
        ("a member gets several heartbeats in per default session timeout",
         HEARTBEAT_INTERVAL_MS_MAX * 3 <= SESSION_TIMEOUT_MS_DEFAULT),
        ("the parked fetches' deadline heap holds every parked fetch",
         PARKED_FETCHES_MAX < PARKED_HEAP_ENTRIES_MAX),
        ("a compaction batch of the offsets log is a valid batch",
         OFFSETS_COMPACT_BATCH_RECORDS_MAX <= BATCH_RECORDS_MAX),
        ("a compaction batch of the offsets log, its last record at its largest (key: kind, "
         "group, topic, partition digits, separators; value: offset and metadata), with 16 "
         "bytes of columns per record, fits a batch",
         OFFSETS_COMPACT_BATCH_BYTES_MAX + (GROUP_NAME_BYTES_MAX + TOPIC_NAME_BYTES_MAX + 14)
         + (8 + OFFSET_METADATA_BYTES_MAX) + OFFSETS_COMPACT_BATCH_RECORDS_MAX * 16
         <= BATCH_BYTES_MAX),
        ("any number of shards fit one node's pin resource",
         SHARD_NODE_RESOURCE_SHARE * SHARDS_MAX <= 1),
        ("the server waits longer for a start than a shard's start and one control call",
         SHARD_START_WAIT_S + CONTROL_CALL_TIMEOUT_S <= CONTROLLER_START_WAIT_S),
        ("a change's timeoutMs field holds any wait the router's control call has",
         TIMEOUT_MS_FIELD_MAX >= CONTROL_CALL_TIMEOUT_S * 1000),
        ("the shortest session timeout holds its heartbeats at the shortest interval",
         GROUP_HEARTBEATS_PER_SESSION * HEARTBEAT_INTERVAL_MS_MIN <= SESSION_TIMEOUT_MS_MIN),
        ("a member applies a new assignment within a heartbeat interval",
         CONSUMER_GROUP_POLL_SLICE_MS <= HEARTBEAT_INTERVAL_MS_MIN),
        ("a heartbeat given up for a refused commit is sent again within the shortest "
         "heartbeat interval", 0 < CLIENT_GIVE_UP_CHECK_MS <= HEARTBEAT_INTERVAL_MS_MIN),
        ("the timestamp windows' defaults are Int64s", 0 <= MESSAGE_TIMESTAMP_AFTER_MS_MAX_DEFAULT <= MESSAGE_TIMESTAMP_BEFORE_MS_MAX_DEFAULT < 2**63),
        ("a topic's smallest segments are ones the log takes", SEGMENT_BYTES_MIN <= SEGMENT_BYTES_CONFIG_MIN <= SEGMENT_BYTES_DEFAULT),
        ("a topic's shortest segment age is below the default", 1 <= SEGMENT_MS_CONFIG_MIN <= SEGMENT_MS_DEFAULT),
        ("a shard keeps a rolled segment open while it is read", SEGMENT_FILES_OPEN_MAX >= 1),
        ("a corrupt entry a read finds is logged", CORRUPT_READ_PLACES_LOGGED_MAX >= 1),
        ("a producer retrying a batch is never forgotten", PRODUCER_DELIVERY_TIMEOUT_MS_DEFAULT < PRODUCER_ID_EXPIRATION_MS),
        ("a request with a maximal batch can be held, within the router's budget",
         BATCH_BYTES_MAX + HEADER_BYTES_MAX <= CLIENT_REQUEST_BYTES_HELD_MAX
         <= ROUTER_REQUEST_BYTES_HELD_MAX),
        ("one client's requests in flight, or one topic's, can all be held",
         max(CLIENT_REQUESTS_IN_FLIGHT_MAX, ROUTER_HELD_REQUESTS_PER_TOPIC_MAX)
         <= ROUTER_REQUESTS_HELD_MAX),
        ("a held request sees several routing refreshes, and an answer before its client "
         "times out", 2 * ROUTING_REFRESH_INTERVAL_S <= ROUTER_REQUEST_HELD_S_MAX
         < CLIENT_REQUEST_TIMEOUT_MS_DEFAULT / 1000),
        ("fifteen clients that stop reading leave a sixteenth room for a maximal fetch",
         15 * CLIENT_REPLY_BYTES_UNSENT_MAX + FETCH_BYTES_MAX <= ROUTER_REPLY_BYTES_UNSENT_MAX),
        ("seven direct clients of one shard that stop reading leave an eighth room for a "
         "maximal fetch",
         7 * CLIENT_REPLY_BYTES_UNSENT_MAX + FETCH_BYTES_MAX <= SHARD_DIRECT_REPLY_BYTES_UNSENT_MAX),
        ("a client may have a maximal fetch in flight, and a default one per partition of a "
         "few dozen", FETCH_BYTES_COUNTED_MIN <= FETCH_BYTES_DEFAULT <= FETCH_BYTES_MAX
         and 32 * FETCH_BYTES_DEFAULT <= CLIENT_FETCH_BYTES_IN_FLIGHT_MAX),
        ("a client is disconnected for not reading only after its requests timed out",
         CLIENT_REQUEST_TIMEOUT_MS_DEFAULT <= CLIENT_REPLIES_STALLED_MS_MAX),
        ("a throttled fetch is answered within the clients' default request timeout",
         QUOTA_THROTTLE_MS_MAX + FETCH_WAIT_MS_DEFAULT < CLIENT_REQUEST_TIMEOUT_MS_DEFAULT),
        ("a client's held requests fit its in-flight bound",
         QUOTA_REQUESTS_HELD_PER_CLIENT_MAX <= CLIENT_REQUESTS_IN_FLIGHT_MAX),
        ("an acks=0 batch fits the router's held payload bytes",
         BATCH_BYTES_MAX <= QUOTA_HELD_PAYLOAD_BYTES_MAX),
        ("a fetchOffsets answer is awaited longer than a client waits for it",
         ACL_OFFSETS_FILTER_TTL_S * 1000 > CLIENT_REQUEST_TIMEOUT_MS_DEFAULT),
        ("the reaper ends a dead server's processes within the 10 s issue 11 allows",
         REAPER_TERM_GRACE_S * REAPER_ROUNDS_MAX <= 10.0),
        ("Kafka connections that have not logged in leave most of the connections to those "
         "that have, and must log in well before an idle connection is closed",
         1 <= KAFKA_CONNECTIONS_BEFORE_LOGIN_MAX <= KAFKA_CONNECTIONS_MAX // 2
         and 0 < KAFKA_LOGIN_TIMEOUT_MS <= KAFKA_CONNECTION_IDLE_MS_MAX // 10),
        ("no one address, nor two, can fill the pool of Kafka connections waiting for "
         "their login",
         1 <= KAFKA_CONNECTIONS_BEFORE_LOGIN_PER_ADDRESS_MAX
         and 3 * KAFKA_CONNECTIONS_BEFORE_LOGIN_PER_ADDRESS_MAX
         <= KAFKA_CONNECTIONS_BEFORE_LOGIN_MAX),
        ("three Kafka users at their bound of connections and a full pool of connections "
         "waiting for their login leave room for other users",
         1 <= KAFKA_CONNECTIONS_PER_PRINCIPAL_MAX
         and 3 * KAFKA_CONNECTIONS_PER_PRINCIPAL_MAX + KAFKA_CONNECTIONS_BEFORE_LOGIN_MAX
         < KAFKA_CONNECTIONS_MAX),
        ("--kafka-connections-max's default gives the Kafka listener the bounds above",
         kafka_connection_limits(KAFKA_CONNECTIONS_MAX)
         == (KAFKA_CONNECTIONS_BEFORE_LOGIN_MAX, KAFKA_CONNECTIONS_BEFORE_LOGIN_PER_ADDRESS_MAX,
             KAFKA_CONNECTIONS_PER_PRINCIPAL_MAX)
         and KAFKA_CONNECTIONS_MAX_MIN <= KAFKA_CONNECTIONS_MAX <= KAFKA_CONNECTIONS_MAX_MAX),
        ("any --kafka-connections-max keeps the Kafka connection bounds' relations above",
         all(_kafka_connection_limits_related(n)
             for n in (KAFKA_CONNECTIONS_MAX_MIN, KAFKA_CONNECTIONS_MAX_MIN + 1,
                       KAFKA_CONNECTIONS_MAX_MIN + 3, KAFKA_CONNECTIONS_MAX_MAX))),
        ("a failed Kafka login is answered well before its connection's login deadline",
         0 <= KAFKA_FAILED_AUTHENTICATION_DELAY_MS <= KAFKA_LOGIN_TIMEOUT_MS // 10),
        ("every waiting Kafka login can check a PLAIN password (about 30 ms at the most "
         "SCRAM iterations) within half the login deadline, on the check threads",
         KAFKA_CONNECTIONS_BEFORE_LOGIN_MAX * 30 / KAFKA_SASL_PLAIN_CHECK_THREADS
         <= KAFKA_LOGIN_TIMEOUT_MS / 2),
        ("a maximal Kafka request fits a connection's in-flight bytes, and they fit the "
         "listener's, which the backend (one client of the router) never holds more of "
         "than the router lets one client have",
         KAFKA_REQUEST_BYTES_MAX <= KAFKA_REQUEST_BYTES_IN_FLIGHT_PER_CONNECTION_MAX
         <= KAFKA_REQUEST_BYTES_IN_FLIGHT_MAX
         and KAFKA_REQUEST_BYTES_IN_FLIGHT_MAX + CLIENT_REQUESTS_IN_FLIGHT_MAX * HEADER_BYTES_MAX
         <= CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX),
        ("one client may use its whole share of request bytes, held ones too, while no "
         "other client has any",
         CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX + ROUTER_REQUEST_BYTES_HELD_MAX
         <= ROUTER_REQUEST_BYTES_IN_FLIGHT_MAX),
        ("a Plinth producer's unacknowledged batches and their headers fit its client's "
         "request bytes in flight, and so does any one request",
         PRODUCER_BUFFER_BYTES_MAX + PRODUCER_REQUESTS_IN_FLIGHT_MAX * HEADER_BYTES_MAX
         <= CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX
         and BATCH_BYTES_MAX + HEADER_BYTES_MAX <= CLIENT_REQUEST_BYTES_IN_FLIGHT_MAX),
        ("a Kafka fetch's parked partitions leave most of the fetch bytes in flight",
         64 * KAFKA_FETCH_PARKED_PARTITION_BYTES_MAX <= CLIENT_FETCH_BYTES_IN_FLIGHT_MAX),
        ("a Kafka fetch's window takes one partition at its largest fetch, and it and the "
         "parked fetches the connection holds take at most half the listener's "
         "fetch bytes and requests in flight, so its first round is not refused by them",
         FETCH_BYTES_MAX <= KAFKA_FETCH_BYTES_IN_FLIGHT_MAX
         and 1 <= KAFKA_FETCH_PARTITIONS_IN_FLIGHT_MAX and 1 <= KAFKA_FETCH_PARKED_PARTITIONS_MAX
         and 2 * (KAFKA_FETCH_BYTES_IN_FLIGHT_MAX + KAFKA_FETCH_PARKED_PARTITIONS_MAX
                  * max(KAFKA_FETCH_PARKED_PARTITION_BYTES_MAX, FETCH_BYTES_COUNTED_MIN))
         <= CLIENT_FETCH_BYTES_IN_FLIGHT_MAX
         and 2 * (KAFKA_FETCH_PARTITIONS_IN_FLIGHT_MAX + KAFKA_FETCH_PARKED_PARTITIONS_MAX)
         <= CLIENT_REQUESTS_IN_FLIGHT_MAX),
        ("a Kafka producer's default pipeline (5) fits a connection's requests in flight",
         5 <= KAFKA_REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX),
        ("a Kafka DescribeLogDirs round leaves most of the backend's requests to others",
         8 * KAFKA_LOG_DIRS_TOPICS_IN_FLIGHT_MAX <= KAFKA_BACKEND_REQUESTS_IN_FLIGHT_MAX),
        ("a server that stops waits for its reaper longer than the reaper can take",
         REAPER_TERM_GRACE_S * REAPER_ROUNDS_MAX < REAPER_EXIT_WAIT_S),
        ("one client key cannot fill a group alone",
         GROUP_MEMBERS_PER_CLIENT_KEY_MAX < GROUP_MEMBERS_MAX),
        ("a shard holds at least one full group", GROUP_MEMBERS_MAX <= GROUP_MEMBERS_PER_SHARD_MAX),
        ("a classic group's leader gets every member's metadata and ids in one answer within "
         "a frame",
         GROUP_MEMBERS_MAX * (CLASSIC_MEMBER_METADATA_BYTES_MAX + 2 * CLASSIC_CLIENT_ID_CHARS_MAX
                              + 64) <= FRAME_BYTES_MAX),
        ("a classic group's assignments fit a frame and a shard's budget",
         CLASSIC_GROUP_ASSIGNMENT_BYTES_MAX <= min(FRAME_BYTES_MAX, CLASSIC_GROUP_BYTES_PER_SHARD_MAX)),
        ("a classic group's initial delay and the longest session fit its rebalance timeout",
         CLASSIC_INITIAL_REBALANCE_DELAY_MS < SESSION_TIMEOUT_MS_MAX
         <= CLASSIC_SESSION_TIMEOUT_MS_MAX <= CLASSIC_REBALANCE_TIMEOUT_MS_MAX),
        ("record timestamps kept through the offsets log's compaction fit its UInt32 deltas",
         OFFSETS_RETENTION_MS < 2**32),
        ("the deletion records of one round fit one batch",
         GROUPS_DELETED_PER_ROUND_MAX <= BATCH_RECORDS_MAX),
        ("assignment work of a round is a small part of the shortest heartbeat interval",
         GROUP_ASSIGNMENT_ROUND_MS * 10 <= HEARTBEAT_INTERVAL_MS_MIN),
        ("a follower's fetch fits a frame", REPLICA_FETCH_BYTES_MAX <= FETCH_BYTES_MAX < FRAME_BYTES_MAX),
        ("a follower's parked fetch is allowed", REPLICA_FETCH_WAIT_MS <= FETCH_WAIT_MS_MAX),
        ("a caught-up follower fetches many times before it could be judged lagging", 10 * REPLICA_FETCH_WAIT_MS <= REPLICA_LAG_TIME_MS_MAX_DEFAULT),
        ("a follower's backoff grows from its first step", 0 < REPLICA_FETCH_BACKOFF_MS_MIN <= REPLICA_FETCH_BACKOFF_MS_MAX),
        ("a lagging follower is noticed well within its lag time", REPLICA_LAG_CHECK_INTERVAL_MS * 10 <= REPLICA_LAG_TIME_MS_MAX_DEFAULT),
        ("an acks=all produce is answered before the client's request times out", ACKS_ALL_WAIT_MS_MAX < CLIENT_REQUEST_TIMEOUT_MS_DEFAULT),
        ("a deleteRecords waiting for followers is answered before the client's request times out",
         REPLICA_FETCH_WAIT_MS < DELETE_RECORDS_WAIT_MS_MAX < CLIENT_REQUEST_TIMEOUT_MS_DEFAULT),
        ("an unsettled in-sync change is offered again before a follower lags out",
         0 < IN_SYNC_CHANGE_RETRY_MS < REPLICA_LAG_TIME_MS_MAX_DEFAULT),
        ("an add of shards may wait for its shards' start within the CLI's default timeout",
         SHARD_START_WAIT_S_MIN + SHARD_ADD_ANSWER_MARGIN_S
         < CLIENT_REQUEST_TIMEOUT_MS_DEFAULT / 1000),
        ("a router refreshes sooner on demand than on its timer",
         0 < ROUTING_REFRESH_ON_DEMAND_INTERVAL_S < ROUTING_REFRESH_INTERVAL_S),
        ("a live router misses several refreshes before it is taken for silent, and a silent "
         "one long before it is forgotten",
         5 * ROUTING_REFRESH_INTERVAL_S <= ROUTER_SILENT_S_MAX < ROUTER_FORGOTTEN_S),
        ("a lost leader is replaced and routed around within issue 12's 3 s",
         (LEADER_CHECK_INTERVAL_S + LEADER_PING_TIMEOUT_S) * LEADER_PING_MISSES_MAX
         + ROUTING_REFRESH_ON_DEMAND_INTERVAL_S <= 3.0
         and LEADER_PING_TIMEOUT_S < CONTROL_CALL_TIMEOUT_S),
        ("the multi-node default replication factor is allowed",
         1 <= REPLICATION_FACTOR_DEFAULT_MULTI_NODE <= REPLICATION_FACTOR_MAX),
        ("a shard's name is retried several times", 0 < 5 * SHARD_NAME_RETRY_INTERVAL_S <= SHARD_NAME_WAIT_S),
        ("a restarting shard is asked again several times at start",
         0 < 5 * SHARD_RESTARTING_RETRY_INTERVAL_S <= SHARD_START_WAIT_S),
        ("Ray restarts the controller at least once", CONTROLLER_RESTARTS_MAX >= 1),
        ("a dead shard's new actor waits a while, and at most minutes, doubling between",
         0 < SHARD_REVIVAL_BACKOFF_S_MIN <= SHARD_REVIVAL_BACKOFF_S_MAX <= 3600),
        ("the reviver looks often enough to keep to the shortest backoff",
         0 < SHARD_REVIVAL_CHECK_INTERVAL_S <= SHARD_REVIVAL_BACKOFF_S_MIN),
        ("a replicated commit is answered before the client's request times out", GROUP_REPLY_WAIT_MS_MAX < CLIENT_REQUEST_TIMEOUT_MS_DEFAULT),
        ("a lost slot leadership is noticed well within a heartbeat interval", GROUP_SLOTS_CHECK_INTERVAL_MS <= HEARTBEAT_INTERVAL_MS_MIN),
        ("a slot's retention keeps its last complete snapshot, with hours to spare", 4 * (OFFSETS_SNAPSHOT_INTERVAL_MS + OFFSETS_SLOT_SEGMENT_MS) <= OFFSETS_SLOT_RETENTION_MS and OFFSETS_SLOT_SEGMENT_MS >= SEGMENT_MS_CONFIG_MIN),
        ("a sealing leader's followers have time for several parked fetches",
         0 < SEAL_POLL_INTERVAL_MS <= 3 * REPLICA_FETCH_WAIT_MS <= SEAL_REPLICATED_WAIT_S * 1000),
        ("a handing-over leader's follower has time for several fetches, and the leader "
         "keeps refusing writes until the controller has given up on it",
         3 * REPLICA_FETCH_WAIT_MS <= LEADER_HANDOVER_WAIT_MS < LEADER_HANDOVER_FENCE_MS
         and LEADER_HANDOVER_WAIT_MS / 1000 < CONTROL_CALL_TIMEOUT_S),
        ("a rebalance check's imbalance is a share", 0 <= LEADER_IMBALANCE_PERCENT <= 100
         and LEADER_REBALANCE_INTERVAL_S > 0),
        ("a leader whose disk refuses writes says so again soon after a move that did not "
         "finish, and a new leader must have room beyond its reserve",
         0 < DISK_REFUSED_NUDGE_INTERVAL_MS <= LEADER_HANDOVER_WAIT_MS
         and LEADER_MOVE_DISK_ROOM_BYTES_MIN > 0
         and DISK_REFUSED_RECENT_S * 1000 > DISK_REFUSED_NUDGE_INTERVAL_MS),
        ("a follower's fetch of every partition fits a header, each at its longest topic name",
         REPLICA_FETCH_PARTITIONS_MAX * (TOPIC_NAME_BYTES_MAX + 1 + 6 * 8) <= HEADER_BYTES_MAX),
        ("an answer to a follower holds one partition's entries and fits a frame",
         REPLICA_FETCH_BYTES_MAX <= REPLICA_FETCH_ANSWER_BYTES_MAX
         and REPLICA_FETCH_ANSWER_BYTES_MAX + BATCH_BYTES_MAX <= FRAME_BYTES_MAX),
        ("a follower's fetches to one leader fit its socket", 1 <= REPLICA_FETCHES_IN_FLIGHT_MAX <= SOCKET_MESSAGES_HWM),
        ("the data path's niceness is one Linux accepts", -20 <= DATA_PATH_NICENESS <= 19),
        ("the data path's OOM score adjustment is one Linux accepts",
         -1000 <= DATA_PATH_OOM_SCORE_ADJ <= 1000),
        ("the router's OOM score adjustment is between Ray's daemons' and its workers'",
         0 < ROUTER_OOM_SCORE_ADJ < DATA_PATH_OOM_SCORE_ADJ),
        ("a multipart upload's part is one S3 takes (5 MiB to 5 GiB) and a maximal segment "
         "needs fewer than S3's 10,000 parts",
         5 * MiB <= REMOTE_UPLOAD_PART_BYTES <= 5 * GiB
         and SEGMENT_BYTES_MAX // REMOTE_UPLOAD_PART_BYTES < 10_000),
        ("a maximal segment's offset index is one small object",
         SEGMENT_BYTES_MAX // SEGMENT_BYTES_MIN * 8 <= REMOTE_SMALL_OBJECT_BYTES_MAX),
        ("the default tier cache holds a read-ahead several times over, and one read-ahead "
         "is a modest allocation", 4 * REMOTE_READAHEAD_CHUNKS * REMOTE_CHUNK_BYTES
         <= TIER_CACHE_BYTES_DEFAULT and REMOTE_READAHEAD_CHUNKS * REMOTE_CHUNK_BYTES <= 64 * MiB),
        ("--tier-cache-bytes' range holds its default",
         TIER_CACHE_BYTES_MIN <= TIER_CACHE_BYTES_DEFAULT <= TIER_CACHE_BYTES_MAX),
        ("a remote call fails (never hangs) within a minute",
         0 < REMOTE_CONNECT_TIMEOUT_S <= REMOTE_REQUEST_TIMEOUT_S
         and REMOTE_RETRY_TIMEOUT_S + REMOTE_REQUEST_TIMEOUT_S <= 60),
        ("an upload's backoff grows from a fraction of a second to at most a minute, and "
         "local retention runs no more often than uploads are checked",
         0 < REMOTE_UPLOAD_BACKOFF_MS_MIN < REMOTE_UPLOAD_BACKOFF_MS_MAX <= 60_000
         and 0 < REMOTE_UPLOAD_CHECK_INTERVAL_S <= RETENTION_CHECK_INTERVAL_S),
        ("a remote fetch of a store that is down is answered within the client's request "
         "timeout", 0 < REMOTE_FETCH_CONNECT_TIMEOUT_S <= REMOTE_FETCH_REQUEST_TIMEOUT_S
         and REMOTE_FETCH_QUEUED_S_MAX + REMOTE_FETCH_REQUEST_TIMEOUT_S
         + REMOTE_FETCH_RETRY_TIMEOUT_S < CLIENT_REQUEST_TIMEOUT_MS_DEFAULT / 1000),
        ("a remote fetch waits for the reader less than one store call may take, and a "
         "read is joined for longer than any read takes", 0 < REMOTE_FETCH_WAIT_MS_MAX / 1000
         < REMOTE_FETCH_REQUEST_TIMEOUT_S and REMOTE_FETCH_QUEUED_S_MAX
         + REMOTE_FETCH_REQUEST_TIMEOUT_S + REMOTE_FETCH_RETRY_TIMEOUT_S
         < REMOTE_FETCH_JOIN_S_MAX and REMOTE_FETCH_FAILED_LOG_INTERVAL_S > 0),
        ("a look-up by time waits for the reader at least three fetches' waits, less than "
         "one store call may take, and is answered before the controller's status call "
         "gives up on its shard", 3 * REMOTE_FETCH_WAIT_MS_MAX <= REMOTE_TIME_LOOKUP_WAIT_MS_MAX
         < 1000 * min(REMOTE_FETCH_REQUEST_TIMEOUT_S, STATUS_CALL_TIMEOUT_S)),
        ("the remote-fetch queue is one the loop's commands can answer",
         0 < REMOTE_FETCHES_QUEUED_MAX <= SHARD_COMMANDS_QUEUED_MAX),
        ("a topic deletion's cache drops never overflow the reader's pending drops",
         PARTITIONS_PER_TOPIC_MAX < REMOTE_CACHE_DROPS_PENDING_MAX),
        ("a page of the longest names, and the stats of as many topics, fit a reader's "
         "traversal limit (and their request a header)",
         0 < ADMIN_LIST_PAGE_NAMES_DEFAULT <= ADMIN_LIST_PAGE_NAMES_MAX
         and ADMIN_LIST_PAGE_NAMES_MAX * (1 + _text_words(max(TOPIC_NAME_BYTES_MAX,
                                                              GROUP_NAME_BYTES_MAX))) + 16
         <= HEADER_TRAVERSAL_WORDS_MAX
         and ADMIN_TOPIC_STATS_NAMES_MAX * (7 + _text_words(TOPIC_NAME_BYTES_MAX)) + 16
         <= HEADER_TRAVERSAL_WORDS_MAX),
        ("a page of the longest group names, naming every shard as not answered "
         "(shard ids of up to 15 bytes: 2 words, and a pointer), fits a reader's traversal "
         "limit", ADMIN_LIST_PAGE_NAMES_MAX * (1 + _text_words(GROUP_NAME_BYTES_MAX))
         + SHARDS_MAX * (1 + _text_words(15)) + 16 <= HEADER_TRAVERSAL_WORDS_MAX),
        ("a createTopics of the longest names, without config, fits a header: a topic "
         "costs its struct (1 data word, 2 pointers), a pointer and its name's words",
         0 < CREATE_TOPICS_BATCH_MAX
         and CREATE_TOPICS_BATCH_MAX * (4 + _text_words(TOPIC_NAME_BYTES_MAX)) + 16
         <= HEADER_TRAVERSAL_WORDS_MAX),
        ("a hung router is noticed well within a request timeout",
         0 < CLIENT_ROUTER_HEARTBEAT_IVL_MS < CLIENT_ROUTER_HEARTBEAT_TIMEOUT_MS
         < CLIENT_REQUEST_TIMEOUT_MS_DEFAULT),
        ("a dead direct socket is noticed well within a request timeout",
         0 < DIRECT_HEARTBEAT_IVL_MS < DIRECT_HEARTBEAT_TIMEOUT_MS < CLIENT_REQUEST_TIMEOUT_MS_DEFAULT),
        ("a shard's ipc:// direct socket pings a client several times before it drops it",
         0 < 3 * DIRECT_IPC_HEARTBEAT_IVL_MS <= CLIENT_REPLIES_STALLED_MS_MAX),
        ("recovery keeps more than one cut per segment (a later torn tail must not push "
         "out the cut before it at once)", 2 <= CUT_FILES_KEPT_MAX <= 100),
        ("plinth check says several bad entries of a segment, not thousands",
         1 <= CHECK_BAD_ENTRIES_SAID_MAX <= 1000),
        ("plinth check says several files it cannot write, not thousands",
         1 <= CHECK_UNWRITABLE_SAID_MAX <= 1000),
        ("plinth check quotes enough of a bad value to recognise it, within a line",
         20 <= CHECK_VALUE_CHARS_SAID_MAX <= 200),
        ("a shard remembers its deleted partitions longer than a default client's metadata "
         "ages, and at least one whole topic's",
         PRODUCER_METADATA_MAX_AGE_MS_DEFAULT / 1000 <= SHARD_DELETED_PARTITIONS_REMEMBERED_S
         and PARTITIONS_PER_TOPIC_MAX <= SHARD_DELETED_PARTITIONS_REMEMBERED_MAX <= 100_000),
    ]


def _kafka_connection_limits_related(connections_max: int) -> bool:
    before_login, per_address, per_principal = kafka_connection_limits(connections_max)
    return (1 <= before_login <= connections_max // 2 and 1 <= per_address
            and 3 * per_address <= before_login and 1 <= per_principal
            and 3 * per_principal + before_login < connections_max)


def _text_words(text_bytes: int) -> int:
    """Words of a Cap'n Proto Text of ``text_bytes`` bytes (with its NUL, padded)."""
    return (text_bytes + 1 + 7) // 8


def check_relations() -> None:
    """Raise AssertionError naming every relation a bad edit broke (at import; any process)."""
    broken = [what for what, holds in _relations() if not holds]
    if broken:
        raise AssertionError("plinth/limits.py: broken relations: " + "; ".join(broken))


check_relations()
