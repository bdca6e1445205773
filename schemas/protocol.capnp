# The Plinth wire protocol: what a client sends to a router over ZeroMQ, and
# what the router forwards to a shard.
#
# Transport: a client connects a DEALER socket to the router's ROUTER socket
# (default tcp://127.0.0.1:7400). Every request and every reply is one ZeroMQ
# multipart message:
#
#   request: [Request message] [payload frame]?
#   reply:   [Reply message]   [payload frame]?
#
#   kind          request payload              reply payload
#   produce       one RecordBatch message      none
#                 (record_batch.capnp), or
#                 one Kafka RecordBatch v2
#                 (Produce.batchFormat)
#   fetch         none                         a run of log entries
#                                              (log_entry.capnp), possibly empty
#   all others    none                         none
#
# Every request gets exactly one reply carrying its requestId, except a
# produce with acks = 0, which gets none. A client may have many requests in
# flight; replies to requests for one partition come back in request order,
# replies for different partitions in any order. A reply whose error.code is
# not `none` carries no result.
#
# The router reads only the Request message, never the payload, and forwards
# produce and fetch to the shard that owns the partition as
#   [client identity] [Request message] [payload frame]?
# over a DEALER connected to the shard's ROUTER socket; the shard answers with
# the client identity first, and the router relays the rest to the client.

@0xbbeed514b90a6036;

struct Request {
  requestId @0 :UInt64;          # chosen by the client, echoed in the Reply
  union {
    produce @1 :Produce;
    fetch @2 :Fetch;
    metadata @3 :Metadata;
    createTopic @4 :CreateTopic;
    deleteTopic @5 :TopicName;
    listTopics @6 :Void;
    describeTopic @7 :TopicName;
    listOffsets @8 :PartitionRef;
    groupHeartbeat @9 :GroupHeartbeat;
    commitOffsets @10 :CommitOffsets;
    fetchOffsets @11 :GroupRef;
    describeGroup @12 :GroupRef;
    listGroups @13 :Void;
    resetOffsets @14 :CommitOffsets;   # memberId empty; refused while the group has members
    alterTopic @15 :CreateTopic;   # config entries replace those given; partitions 0: unchanged,
                                   # more than the topic has: add partitions up to that count
    status @16 :Void;              # nodes, shards, routers (plinth status)
    addShards @17 :UInt32;         # how many shards to add (plinth shards add)
    removeShards @18 :UInt32;      # how many of the newest shards to remove
    replicaFetch @19 :ReplicaFetch;   # shard to shard only: a router refuses it from clients
    moveShard @20 :MoveShard;      # re-create a shard's replicas on another node
    replicaFetchAll @21 :ReplicaFetchAll;   # shard to shard only, as replicaFetch
    classicJoin @22 :ClassicJoin;            # Kafka's classic group protocol (the Kafka
    classicSync @23 :ClassicSync;            # listener's JoinGroup, SyncGroup, Heartbeat
    classicHeartbeat @24 :ClassicHeartbeat;  # and LeaveGroup), answered by the group's
    classicLeave @25 :ClassicLeave;          # coordinating shard: see below
    listTopicsPage @26 :NamesPageRequest;    # a page of the topic names (the console's list)
    listGroupsPage @27 :NamesPageRequest;    # a page of the group names, from every shard
    topicStats @28 :TopicStatsRequest;       # size and rates of some topics
    createTopics @29 :CreateTopics;          # many topics at once (Kafka's CreateTopics)
    deleteGroup @30 :GroupRef;               # its committed offsets and settings; refused
                                             # while it has members (Kafka's DeleteGroups)
    deleteRecords @31 :DeleteRecords;        # Kafka's DeleteRecords, one partition:
                                             # answered `offsets`, see below
    electLeaders @32 :ElectLeaders;          # Kafka's ElectLeaders: answered
                                             # `elections`, see below
    deleteOffsets @34 :DeleteOffsets;        # some of a group's committed offsets
                                             # (Kafka's OffsetDelete): answered
                                             # `offsetDeletions`, see below
  }
  timeoutMs @33 :UInt16;   # changes (create, alter or delete topics; add, remove or
                           # move shards): the time the client still waits for this
                           # answer, at most 65535 (TIMEOUT_MS_FIELD_MAX; a longer
                           # wait is sent as that), 0 not given. A change that has
                           # not started when it runs out is not made: the router
                           # answers requestTimedOut, "nothing was changed". Other
                           # kinds ignore it. (16 bits: it fills the data section's
                           # free bytes 10-11, so Request keeps its 2 data words.)
}

# electLeaders (plinth topic elect-leaders, Kafka's ElectLeaders): for each
# replicated partition asked (`all`: every one of every topic), a new leader.
#   preferred (0): its preferred leader (the first of its replicas), if that
#     replica answers and is in sync, after a hand-over: the leader stops taking
#     writes until that replica holds its whole log (at most
#     LEADER_HANDOVER_WAIT_MS), so that no acknowledged record, acks=1 included,
#     is cut when it becomes a follower. electionNotNeeded where it leads already
#     (and for a partition of one copy), preferredLeaderNotAvailable where it does
#     not answer, is not in sync, or did not catch up in time.
#   unclean (1): a leader for a partition that has none (offline), among any
#     replica that answers, as unclean.leader.election.enable would: records may be
#     lost. electionNotNeeded where it has a leader, eligibleLeadersNotAvailable
#     where no replica answers.
# Answered `elections`, one per partition asked, by topic then partition; needs the
# cluster grant. unknownTopic / partitionOutOfRange per partition for one that is
# not there. The controller runs it (control/controller.py, elect_leaders).
struct ElectLeaders {
  electionType @0 :UInt8;        # 0 preferred, 1 unclean (Kafka's ElectionType)
  all @1 :Bool;                  # every partition of every topic; `partitions` unused
  partitions @2 :List(TopicPartitions);
}

struct ElectionResult {
  topic @0 :Text;
  partition @1 :UInt32;
  error @2 :Error;               # none: elected
  leader @3 :Text;               # its leader after the request ("" offline)
}

# deleteOffsets (plinth group delete-offsets, Kafka's OffsetDelete): forget the
# group's committed offsets of these partitions, durably before the answer
# (tombstones in its offsets log; on a replicated broker appended to its slot of
# __consumer_offsets and answered once in sync, like a commit). Routed to the
# group's coordinator; needs admin on the group and consume on every topic named
# (as Kafka's DELETE on the group and READ on the topics). The whole request fails
# with unknownGroup for a group with neither members nor offsets, groupNotEmpty for
# a Kafka group with members of a protocol type other than "consumer". Otherwise
# answered `offsetDeletions`, one per partition asked, by topic then partition:
# error none where the offset is gone (or there was none), groupSubscribedToTopic
# where the group's active members subscribe to its topic (the offset is kept),
# unknownTopic / partitionOutOfRange for one that does not exist. A group left with
# neither members nor offsets is deleted. Clients send a topic per request (its
# partitions, at most PARTITIONS_PER_TOPIC_MAX, fit HEADER_BYTES_MAX).
struct DeleteOffsets {
  group @0 :Text;
  partitions @1 :List(TopicPartitions);
}

struct OffsetDeletion {
  topic @0 :Text;
  partition @1 :UInt32;
  error @2 :Error;               # none: deleted (or none was committed)
}

# deleteRecords: no record of the partition below `offset` is served any more (its
# log start offset, the low watermark, becomes `offset`, even inside a segment),
# durably before the answer (on the leader, and, for a replicated partition, on
# every in-sync follower: requestTimedOut after DELETE_RECORDS_WAIT_MS_MAX, the
# leader's kept). -1: the high watermark. Routed to the partition's
# leader, like listOffsets; needs admin on the topic. Answered `offsets`: its
# startOffset is the new low watermark (unchanged if `offset` was below it),
# endOffset the high watermark. offsetOutOfRange for an offset past the high
# watermark or negative (not -1); malformedRequest for a partition whose history
# spans shards (not supported yet), invalidTopic for the internal offsets topic.
# See shards/log_start_floor.py.
struct DeleteRecords {
  topic @0 :Text;
  partition @1 :UInt32;
  offset @2 :Int64;
}

# --- Pages of names and topic stats (issue 16: a console with 10,000 topics) --
# listTopicsPage and listGroupsPage answer namesPage: the names that start with
# `prefix` and sort after `after` (by code point), the first `limit` of them in
# order, and whether more follow; a client walks a list by asking again with
# `after` = the last name. limit 0 means all of them (listTopics and listGroups,
# which clients from before paging send, answer every name as they always did).
# limit over ADMIN_LIST_PAGE_NAMES_MAX: requestTooLarge. See plinth/name_pages.py.
struct NamesPageRequest {
  prefix @0 :Text;
  after @1 :Text;
  limit @2 :UInt32;
}

struct NamesPage {
  names @0 :List(Text);
  more @1 :Bool;
  # listGroupsPage: the shards that did not answer within STATUS_CALL_TIMEOUT_S
  # (stopped, hung, restarting), sorted; the page lacks the groups they coordinate,
  # and is exact over the others. Empty in a listTopicsPage (no shard is asked).
  unanswered @2 :List(Text);
}

# topicStats: at most ADMIN_TOPIC_STATS_NAMES_MAX topics (requestTooLarge beyond);
# an unknown topic is unknownTopic. Answered from the counters the shards keep
# in memory (shards/shard_stats.py), never from their disks.
struct TopicStatsRequest {
  topics @0 :List(Text);
}

struct TopicStats {
  name @0 :Text;
  partitions @1 :UInt32;
  sizeBytes @2 :UInt64;          # on the shards' disks, every range of every partition
  recordsInPerS @3 :Float64;     # produced, over the shards' rate window (~10 s)
  bytesInPerS @4 :Float64;
  recordsOutPerS @5 :Float64;    # handed to fetches, over the same window
  bytesOutPerS @6 :Float64;
  partitionsAnswered @7 :UInt32; # partitions whose shards answered (< partitions: a
                                 # shard is down, and the numbers are short of it)
}

# plinth shards move SHARD --node NODE: the shard is pinned to another node and
# started there (its directory on that node: empty after a lost node); its
# replicas catch up from their leaders and rejoin the in-sync sets.
struct MoveShard {
  shard @0 :Text;
  node @1 :Text;                 # a node's name, pin resource or Ray node id (prefix)
  allowReplicasOnOneNode @2 :Bool;   # the node may hold another replica of a partition
  acceptDataLoss @3 :Bool;       # partitions with no other copy come back empty
  force @4 :Bool;                # move it even though its node is alive and it serves
}

struct Produce {
  topic @0 :Text;
  partition @1 :UInt32;
  acks @2 :Int8 = 1;             # 0: no reply; 1 or -1 (all): reply once durable
  batchFormat @3 :UInt8;         # the payload's format, as log_entry.capnp's attributes:
                                 # 0 a Plinth RecordBatch, 2 a Kafka RecordBatch v2
}

struct Fetch {
  topic @0 :Text;
  partition @1 :UInt32;
  offset @2 :Int64;              # first offset wanted
  maxBytes @3 :UInt32;           # soft cap on the payload; one whole entry is
                                 # always returned even if larger
  maxWaitMs @4 :UInt32;          # how long to park the fetch when there is no
                                 # data at `offset` yet (long poll); 0 = don't
}

struct Metadata {
  topics @0 :List(Text);         # empty: every topic
}

struct CreateTopic {
  name @0 :Text;
  partitions @1 :UInt32;
  config @2 :List(ConfigEntry);
  replicationFactor @3 :UInt16;  # 0: the server's --default-replication-factor
  deleteConfig @4 :List(Text);  # alterTopic: keys set back to their defaults (Kafka's
                                # DELETE config operation); none also in config
}

# createTopics (issue 16): 1..CREATE_TOPICS_BATCH_MAX topics, created all or none
# (the first refused one is the error, naming its topic); answered with `topics`,
# one TopicInfo per topic in the request's order. One controller call for all:
# a create rewrites the metadata and the shards' manifests whole, so thousands of
# topics are made in batches. Its header, like every request's, fits HEADER_BYTES_MAX.
struct CreateTopics {
  topics @0 :List(CreateTopic);
  validateOnly @1 :Bool;         # check every topic as creating it would, create none
                                 # (Kafka's validate_only); answered as a create would be
}

# --- Replication (shard to shard, over the cluster's authenticated hop) ------
# A follower pulls from the partition's leader: [Request replicaFetch] and
# gets [Reply replicaFetch][a run of log entries, as stored]. Kafka's ISR
# protocol: the fetch offset is the follower's durable log end (it fsyncs
# before fetching again), so the leader learns from it what the follower
# holds; see shards/replication.py for the invariants.

struct ReplicaFetch {
  topic @0 :Text;
  partition @1 :UInt32;
  replicaId @2 :Text;            # the follower shard's id
  leaderEpoch @3 :Int32;         # the epoch the follower follows; the leader refuses
                                 # an older one (fencedLeaderEpoch) and, if it is not
                                 # the leader of a newer one, answers notLeader
  fetchOffset @4 :Int64;         # the follower's durable log end offset
  lastFetchedEpoch @5 :Int32;    # leader epoch of the follower's last entry, -1 if none
  maxBytes @6 :UInt32;
  maxWaitMs @7 :UInt32;          # park at the leader's log end this long
  controllerEpoch @8 :Int32;     # the controller incarnation that made the follower
}

struct ReplicaFetchResult {
  highWatermark @0 :Int64;
  logStartOffset @1 :Int64;
  logEndOffset @2 :Int64;        # the leader's
  # KIP-320: the follower's log diverges from the leader's. It truncates to
  # min(divergingEndOffset, its own end of divergingEpoch) and fetches again;
  # no entries come with this answer. -1 / -1: no divergence.
  divergingEpoch @3 :Int32 = -1;
  divergingEndOffset @4 :Int64 = -1;
  epochStarts @5 :List(EpochStart);   # leader epochs starting inside the entries sent
  # The leader's log start floor: the offset deleteRecords moved the partition's
  # start to, maybe inside a segment (0: none). Not where the leader's segments
  # start (logStartOffset above): a new replica set's leader opens its range at
  # the seal offset with floor 0, and a follower that still serves the range
  # before it must not hide that range. A follower adopts it up to its own high
  # watermark. 0 from a leader before it.
  logStartFloor @6 :Int64;
}

# One fetch per (follower shard, leader shard), as Kafka's per broker pair: every
# partition the follower follows on that leader, each fenced, checked for
# divergence and answered exactly as a replicaFetch of its own. The leader
# holds the fetch (long poll) until any of them has entries, an answer of its
# own (an error, a divergence, a log start) is due, or maxWaitMs ends:
# [Request replicaFetchAll] and [Reply replicaFetchAll][entries of them all,
# one after another, each partition's entriesBytes long, in the request's order].
struct ReplicaFetchAll {
  replicaId @0 :Text;            # the follower shard's id
  controllerEpoch @1 :Int32;     # the controller incarnation that made the follower
  maxWaitMs @2 :UInt32;          # park until any partition has entries, this long at most
  maxBytes @3 :UInt32;           # all the answer's entries (one whole entry always goes)
  partitions @4 :List(ReplicaFetchPartition);
}

struct ReplicaFetchPartition {
  topic @0 :Text;
  partition @1 :UInt32;
  leaderEpoch @2 :Int32;         # as ReplicaFetch's
  fetchOffset @3 :Int64;
  lastFetchedEpoch @4 :Int32;
  maxBytes @5 :UInt32;           # this partition's entries
  logStartOffset @6 :Int64;      # the follower's (its deleteRecords floor adopted so
                                 # far): a leader's deleteRecords waits for its in-sync
                                 # followers' to reach the new one. 0 from a follower
                                 # before it
  appendFailed @7 :Bool;         # the follower's disk refused its last append of this
                                 # partition's entries (a full disk): the leader takes
                                 # it out of the in-sync set at once, as Kafka takes an
                                 # offline log dir's replicas out. False from a follower
                                 # before it
}

# One partition's part of the answer, in the request's order.
struct ReplicaFetchPartitionResult {
  error @0 :Error;               # code none: `result` holds; else this partition's refusal
  result @1 :ReplicaFetchResult;
  entriesBytes @2 :UInt32;       # its entries' length in the payload frame
}

struct EpochStart {
  leaderEpoch @0 :Int32;
  startOffset @1 :Int64;
}

struct ConfigEntry {
  key @0 :Text;
  value @1 :Text;
}

struct TopicName {
  name @0 :Text;
  # deleteTopic only: delete the topic only if this is its topic id (32 hex digits,
  # as TopicInfo.topicId shows it); unknownTopicId if the topic under `name` has
  # another (deleted and created again since the id was read). "": any id.
  topicId @1 :Text;
}

struct PartitionRef {
  topic @0 :Text;
  partition @1 :UInt32;
  # listOffsets only: also find the first record stamped at or after this time
  # (ms since the epoch; -3: the record with the largest timestamp, Kafka's
  # MAX_TIMESTAMP), answered in PartitionInfo's foundOffset/foundTimestampMs.
  # -1 (the default, and what clients before it send): no look-up by time.
  timestampMs @2 :Int64 = -1;
  # listOffsets only: the answer's startOffset must be the log start, remote
  # included, as a reset to the earliest offset (Kafka's -2) needs. A tiered
  # partition whose shard has not listed object storage yet
  # (PartitionInfo.remoteNotListed: a new leader, the store down) may hold
  # records below the start it knows, and answers unavailable (retry) instead,
  # unless its local log starts at its floor. False (older clients): answered
  # as known.
  requireListed @3 :Bool;
}

# --- Consumer groups ---------------------------------------------------------
# Group requests go to the shard that coordinates the group: the router picks
# it by rendezvous hashing of the group name over the shard ids, as it places
# partitions. See shards/group_coordinator.py for the protocol (KIP-848 style).

struct GroupHeartbeat {
  group @0 :Text;
  memberId @1 :Text;             # empty to join; then the id the coordinator gave
  memberEpoch @2 :Int32;         # 0 to join, -1 to leave, else the last epoch received
  topics @3 :List(Text);         # the subscription
  owned @4 :List(TopicPartitions);   # partitions the member owns right now
  sessionTimeoutMs @5 :UInt32;
  assignor @6 :Text;             # "sticky" or "range"; used when the group is created
}

struct TopicPartitions {
  topic @0 :Text;
  partitions @1 :List(UInt32);
}

struct CommitOffsets {
  group @0 :Text;
  memberId @1 :Text;
  memberEpoch @2 :Int32;         # a classic group's: its generation id
  offsets @3 :List(PartitionOffset);
  classic @4 :Bool;              # a commit of Kafka's classic group protocol (OffsetCommit)
  groupInstanceId @5 :Text;      # classic: the static member's instance id, "" if none
}

# --- Kafka's classic group protocol ------------------------------------------
# What a Kafka client's JoinGroup, SyncGroup, Heartbeat and LeaveGroup become:
# the Kafka listener sends them to the group's coordinating shard (routed as
# every group request), whose classic coordinator (shards/classic_group.py)
# answers with Kafka's own error codes in `errorCode` (0: none), because only
# Kafka clients see them. A join or a sync may be answered late: when the
# rebalance it waits for completes. Kafka's null strings are "" here.

struct ClassicJoin {
  group @0 :Text;
  memberId @1 :Text;             # "" for a new member
  groupInstanceId @2 :Text;      # a static member's instance id
  protocolType @3 :Text;         # "consumer" for consumers
  protocols @4 :List(ClassicProtocol);   # in the member's order of preference
  sessionTimeoutMs @5 :Int32;
  rebalanceTimeoutMs @6 :Int32;
  clientId @7 :Text;
  clientHost @8 :Text;
  requireKnownMemberId @9 :Bool; # JoinGroup v4+: a new member first gets an id (KIP-394)
}

struct ClassicProtocol {
  name @0 :Text;                 # the assignor, e.g. "range"
  metadata @1 :Data;             # the member's subscription, opaque to the broker
}

struct ClassicSync {
  group @0 :Text;
  generationId @1 :Int32;
  memberId @2 :Text;
  groupInstanceId @3 :Text;
  protocolType @4 :Text;
  protocolName @5 :Text;
  assignments @6 :List(ClassicAssignment);   # the leader's; empty from the others
}

struct ClassicAssignment {
  memberId @0 :Text;
  assignment @1 :Data;           # opaque to the broker
}

struct ClassicHeartbeat {
  group @0 :Text;
  generationId @1 :Int32;
  memberId @2 :Text;
  groupInstanceId @3 :Text;
}

struct ClassicLeave {
  group @0 :Text;
  members @1 :List(ClassicMemberRef);
}

struct ClassicMemberRef {
  memberId @0 :Text;
  groupInstanceId @1 :Text;
}

struct ClassicResult {
  errorCode @0 :Int16;           # Kafka's error code, 0: none
  union {
    none @1 :Void;               # heartbeat
    join @2 :ClassicJoinResult;
    sync @3 :ClassicSyncResult;
    leave @4 :List(ClassicLeaveResult);
  }
}

struct ClassicJoinResult {
  generationId @0 :Int32;
  protocolType @1 :Text;
  protocolName @2 :Text;
  leader @3 :Text;
  memberId @4 :Text;
  members @5 :List(ClassicMember);   # the leader's answer only
}

struct ClassicMember {
  memberId @0 :Text;
  groupInstanceId @1 :Text;
  metadata @2 :Data;
}

struct ClassicSyncResult {
  protocolType @0 :Text;
  protocolName @1 :Text;
  assignment @2 :Data;
}

struct ClassicLeaveResult {
  memberId @0 :Text;
  groupInstanceId @1 :Text;
  errorCode @2 :Int16;
}

struct PartitionOffset {
  topic @0 :Text;
  partition @1 :UInt32;
  offset @2 :Int64;              # the next offset to consume
  # commitOffsets, resetOffsets: the string stored with the offset (Kafka's
  # committed_metadata), up to OFFSET_METADATA_BYTES_MAX UTF-8 bytes, "" for none
  # (offsetMetadataTooLarge refuses the whole commit); fetchOffsets' committed: the
  # one stored. Readers from before it see offsets without metadata.
  metadata @3 :Text;
}

struct GroupRef {
  group @0 :Text;
}

struct Reply {
  requestId @0 :UInt64;
  error @1 :Error;
  union {
    none @2 :Void;
    produce @3 :ProduceResult;
    fetch @4 :FetchResult;
    topics @5 :List(TopicInfo);  # metadata, listTopics, describeTopic
    offsets @6 :PartitionInfo;   # listOffsets
    heartbeat @7 :HeartbeatResult;
    committed @8 :List(PartitionOffset);   # fetchOffsets
    group @9 :GroupInfo;         # describeGroup
    groups @10 :List(Text);      # listGroups
    status @11 :StatusInfo;
    moves @12 :List(PartitionMove);   # addShards, removeShards
    replicaFetch @14 :ReplicaFetchResult;
    shardMove @15 :ShardMove;    # moveShard
    replicaFetchAll @16 :List(ReplicaFetchPartitionResult);   # in the request's order
    classic @17 :ClassicResult;  # classicJoin, classicSync, classicHeartbeat, classicLeave
    namesPage @18 :NamesPage;    # listTopicsPage, listGroupsPage
    topicStats @19 :List(TopicStats);   # in the request's order
    elections @20 :List(ElectionResult);   # electLeaders
    offsetDeletions @22 :List(OffsetDeletion);   # deleteOffsets
  }
  throttleTimeMs @13 :UInt32;    # the client is over a quota: its next request
                                 # waits this long (as Kafka's throttle_time_ms)
  # listGroups: each group's state and protocol type, in the order of `groups`
  # (outside the union, so a reader that predates it reads `groups` alone).
  groupListings @21 :List(GroupListing);
  # The answering broker's protocol version (plinth/protocol.py PROTOCOL_VERSION), on
  # `topics` replies (metadata, listTopics, describeTopic): 0 from a broker before
  # Plinth 0.2.0, which has no such field. A client asks it before a request whose
  # guard an older broker would ignore (client/admin.py, _require_protocol).
  protocolVersion @23 :UInt16;
}

# A partition whose writes moved to a new shard at `offset`; its records
# before `offset` stay on `fromShard` and are read from there.
struct PartitionMove {
  topic @0 :Text;
  partition @1 :UInt32;
  fromShard @2 :Text;
  toShard @3 :Text;
  offset @4 :Int64;
}

struct ShardMove {
  shard @0 :Text;
  fromNode @1 :Text;             # node names (plinth status prints them)
  toNode @2 :Text;
  address @3 :Text;              # where it listens now
  repairing @4 :List(PartitionRef);   # replicas rebuilt from their leaders
  emptied @5 :List(PartitionRef);     # no other copy: they start empty (acceptDataLoss)
}

struct StatusInfo {
  nodes @0 :List(NodeStatus);
  shards @1 :List(ShardStatus);
  routers @2 :List(RouterStatus);
  underReplicatedPartitions @3 :UInt32;   # a replica out of the in-sync set
  offlinePartitions @4 :UInt32;           # no leader, or its leader's shard down
  # Tiered storage: the server's claim on its store (shards/tier/store_claim.py), one
  # line ("" without a tier store, and from a broker before session 42), and whether
  # it holds it: only then do its shards delete remote segments.
  tierClaim @5 :Text;
  tierClaimHeld @6 :Bool;
}

struct NodeStatus {
  nodeId @0 :Text;
  address @1 :Text;
  alive @2 :Bool;
  name @3 :Text;                 # what plinth shards move --node takes
}

struct ShardStatus {
  shardId @0 :Text;
  address @1 :Text;              # its ZeroMQ socket; the host is its node
  alive @2 :Bool;
  partitions @3 :UInt32;
  sizeBytes @4 :UInt64;
  recordsPerS @5 :Float64;       # produced, over the last ~10 s
  bytesPerS @6 :Float64;
  draining @7 :Bool;             # removed: serves its older ranges until they are gone
  node @8 :Text;                 # the name of the node it is pinned to
  directAddress @9 :Text;        # its socket for clients' produce and fetch, "" if none
  requestsViaRouter @10 :UInt64; # requests it took from routers, since it started
  requestsDirect @11 :UInt64;    # requests it took on its direct socket, since it started
  # Tiered storage (issue 14), over the partitions it uploads:
  remoteBytes @12 :UInt64;       # log bytes in object storage
  uploadLagBytes @13 :UInt64;    # log bytes below the high watermark not uploaded yet
  uploadLagS @14 :Float64;       # age of the oldest rolled segment waiting, in seconds
  uploadErrors @15 :UInt64;      # failed upload attempts, since it started
  drainingReason @16 :Text;      # of a draining shard: why it has not retired yet (issue 14)
  recordsOutPerS @17 :Float64;   # handed to clients' fetches (a follower's replica fetch
  bytesOutPerS @18 :Float64;     # is not counted), over recordsPerS's window
  pid @19 :UInt32;               # its process (ray::ShardActor) on its node: the one it
                                 # answered status from, else the one it last announced
                                 # its start from; 0: not known
  # The file system of its directory (all 0: not known, or an older broker):
  diskFreeBytes @20 :UInt64;
  diskTotalBytes @21 :UInt64;
  diskReserveBytes @22 :UInt64;  # produces that would leave less free are refused
  downReason @23 :Text;          # of a DOWN shard, why if known: "restarting: died 101
                                 # times, next start in 40 s" (a shard Ray gave up on)
  remotePartitionsNotListed @24 :UInt32;  # of those it uploads, whose remote log it has
                                 # not listed yet: remoteBytes may lack their segments
  partitionsAppendsFailing @25 :UInt32;   # whose last append its disk refused (full,
                                 # EIO): their produces fail whatever the reserve says
}

struct RouterStatus {
  address @0 :Text;
  node @1 :Text;
}

struct HeartbeatResult {
  memberId @0 :Text;
  memberEpoch @1 :Int32;
  heartbeatIntervalMs @2 :UInt32;
  assignment @3 :List(TopicPartitions);  # what the member may own now
}

struct GroupInfo {
  group @0 :Text;
  assignor @1 :Text;             # a classic group's: the protocol its members chose
  epoch @2 :Int32;               # a classic group's: its generation id
  members @3 :List(MemberInfo);
  committed @4 :List(PartitionOffset);
  # A group of Kafka's classic protocol (the Kafka listener's groups): protocolType
  # is what its members joined with ("consumer"), "" for a Plinth group.
  protocolType @5 :Text;
  state @6 :Text;                # classic: Kafka's state name (Stable, Empty, ...)
  leader @7 :Text;               # classic: the leader's member id
}

# A group as listGroups shows it (Kafka's ListGroups): `state` is Kafka's name.
# A classic group's is its coordinator's (PreparingRebalance, CompletingRebalance,
# Stable, Empty, Dead) and protocolType what its members joined with
# ("consumer"); a Plinth group's is Stable with members, Empty without (known by
# its committed offsets only), as describeGroup shows it, and protocolType "".
struct GroupListing {
  state @0 :Text;
  protocolType @1 :Text;
}

struct MemberInfo {
  memberId @0 :Text;
  memberEpoch @1 :Int32;
  topics @2 :List(Text);
  assignment @3 :List(TopicPartitions);   # classic: decoded from assignmentBytes
                                          # when the protocol type is "consumer"
  # Classic groups only (opaque to the broker, as Kafka's DescribeGroups has them):
  groupInstanceId @4 :Text;
  clientId @5 :Text;
  clientHost @6 :Text;
  metadata @7 :Data;
  assignmentBytes @8 :Data;
}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;              # for people: names the thing and the limit
  # The broker refused before writing anything of the request, so nothing of it was
  # stored: a storageError from a shard's disk reserve (checked before the append),
  # where another storageError may follow a write or an fsync that failed. False
  # from a broker before it: a client then takes the write as maybe done.
  beforeWrite @2 :Bool;
  # The error came from tiered storage's object store (a remote read or look-up),
  # not from the shard's own log: an unavailable is the store down or slow, a
  # storageError the store refusing for good. False from a broker before it.
  remoteStorage @3 :Bool;
}

# The one registry of error codes, shared by router, shards and clients.
# Codes are stable: never renumber, only append.
enum ErrorCode {
  none @0;
  malformedRequest @1;           # not a valid Request, wrong frames or types
  unknownTopic @2;
  partitionOutOfRange @3;        # partition >= the topic's partition count
  offsetOutOfRange @4;           # the message gives the valid range
  recordTooLarge @5;             # a batch over the batch size limit
  requestTooLarge @6;            # a frame over the frame size limit
  invalidBatch @7;               # a RecordBatch that breaks its own rules
  topicExists @8;
  invalidTopic @9;               # bad topic name or partition count
  invalidConfig @10;
  tooManyTopics @11;
  storageError @12;              # the shard could not write or read its disk
  corruptData @13;               # a stored entry failed its CRC
  unavailable @14;               # the owner of the partition is not reachable
  requestTimedOut @15;
  internalError @16;
  tooManyRequests @17;           # a bound on queued requests was hit
  unknownMemberId @18;           # not (or no longer) a member: rejoin
  staleMemberEpoch @19;          # fenced: rejoin
  notOwner @20;                  # commit for a partition the member does not own
  groupNotEmpty @21;             # e.g. an offset reset while members are active
  invalidGroup @22;              # bad group name
  unknownGroup @23;              # no members and no committed offsets
  outOfOrderSequence @24;        # idempotent producer: a gap or a stale retry
  notAuthorized @25;             # the client's key lacks the ACL grant
  invalidTimestamp @26;          # a record timestamp outside the topic's window, or < 0
  groupMaxSizeReached @27;       # a group (or one client's share of it) is full
  tooManyGroups @28;             # the coordinating shard holds all the groups it may
  tooManyProducers @29;          # a partition holds all the producer ids it may: retry
  notEnoughReplicas @30;         # in-sync replicas < min.insync.replicas: acks=all retries
  notLeader @31;                 # this shard does not lead the partition (any more): refresh
  fencedLeaderEpoch @32;         # a request from an older leader epoch or controller
  invalidReplicationFactor @33;  # outside 1..the nodes (or the shards) there are
  rebalanceInProgress @34;       # a classic (Kafka protocol) group rebalances: rejoin
  fencedInstanceId @35;          # a classic group's static member was replaced
  inconsistentGroupProtocol @36; # a group used with the other group protocol
  invalidPartitions @37;         # a partition count below the topic's, or of an internal topic
  electionNotNeeded @38;         # electLeaders: the partition has the leader asked for
  preferredLeaderNotAvailable @39;   # electLeaders: its preferred leader may not lead now
  eligibleLeadersNotAvailable @40;   # electLeaders (unclean): no replica answers
  invalidProducerEpoch @41;      # idempotent producer: an epoch older than its last one here
  offsetMetadataTooLarge @42;    # a commit's metadata over OFFSET_METADATA_BYTES_MAX: none stored
  unknownTopicId @43;            # deleteTopic's topicId is not the topic's (re-created since)
  groupSubscribedToTopic @44;    # deleteOffsets: the group's members subscribe to the topic
}

struct ProduceResult {
  baseOffset @0 :Int64;          # offset given to the batch's first record
}

struct FetchResult {
  highWatermark @0 :Int64;       # offset after the last readable record
  logStartOffset @1 :Int64;      # first offset still stored
}

struct TopicInfo {
  name @0 :Text;
  partitions @1 :UInt32;
  config @2 :List(ConfigEntry);
  partitionInfo @3 :List(PartitionInfo);  # only in describeTopic replies
  # Metadata replies: per partition, its leader shard's direct socket, where a
  # client may send that partition's produce and fetch requests without the
  # router hop ("" where it must use the router). Empty when the router offers
  # none (CurveZMQ, an ACL, a non-loopback listener, --direct-clients off).
  directAddresses @4 :List(Text);
  # The topic's id (32 hex digits, KIP-516's topic UUID): a topic deleted and
  # created again under the same name has another. In every reply that carries a
  # TopicInfo but createTopics with validateOnly ("": none made).
  topicId @5 :Text;
}

struct PartitionInfo {
  partition @0 :UInt32;
  shard @1 :Text;
  startOffset @2 :Int64;
  endOffset @3 :Int64;
  sizeBytes @4 :UInt64;
  # Replication (describeTopic): `shard` above is the leader, "" when offline.
  replicas @5 :List(Text);       # preferred leader first
  inSyncReplicas @6 :List(Text);
  leaderEpoch @7 :Int32;
  highWatermark @8 :Int64;
  # Tiered storage (describeTopic, listOffsets). `startOffset` is the log start,
  # remote included; `sizeBytes` the bytes on the shards' disks. A segment both
  # uploaded and still within local retention counts in both byte counts.
  localStartOffset @9 :Int64;    # first offset still on the shards' disks
  remoteStartOffset @10 :Int64 = -1;   # first offset in object storage (-1: none)
  remoteEndOffset @11 :Int64 = -1;     # offset after the last one there (-1: none)
  remoteBytes @12 :UInt64;       # log bytes of the readable remote segments
  # listOffsets by time (PartitionRef.timestampMs): the first record, in offset
  # order, stamped at or after the time asked, and its timestamp (exact, as
  # Kafka's ListOffsets). -1/-1: no record is (or no look-up was asked). An
  # offset with foundTimestampMs -1 is a conservative answer from object
  # storage: the first record is at or after it (shards/time_lookup.py).
  foundOffset @13 :Int64 = -1;
  foundTimestampMs @14 :Int64 = -1;
  # Tiered storage (describeTopic): "" when the remote offsets and
  # bytes above are the store's (or the topic is not tiered). Else the shard has not
  # listed object storage since it began uploading or following the partition (a new
  # leader after a failover, a restart, the store down): the store may hold segments
  # its view lacks, so those fields are a lower bound, and this says why (the last
  # listing's error). A broker before it sends "".
  remoteNotListed @15 :Text;
}
