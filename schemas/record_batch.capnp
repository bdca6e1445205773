# RecordBatch: the unit of work from producer to disk to consumer.
#
# A producer encodes the records it sends to one partition as one RecordBatch.
# The router forwards the encoded bytes untouched, the shard stores them
# untouched behind a LogEntryHeader (log_entry.capnp), and a fetch returns
# them untouched. Only the producer encodes and only the consumer decodes
# records; the shard checks the batch's shape once per batch, never per record.
#
# The layout is columnar, not a List(Record) of structs, because building one
# struct per record costs about 2 us in pycapnp while concatenating columns
# costs well under 1 us per record:
#
#   record i (0 <= i < recordCount) has
#     offset      = the LogEntryHeader's baseOffset + i
#     timestamp   = baseTimestampMs + timestampDeltasMs[i]
#     key         = null if keyLengths[i] == -1, else the next keyLengths[i]
#                   bytes of `keys` (keys are concatenated in record order)
#     value       = likewise from valueLengths and `values`
#     headers     = the entries of the RecordHeaders whose index == i, if any
#
# The three per-record integer columns are packed little-endian arrays inside
# Data fields (Int32 for the lengths, UInt32 for the deltas), so that a client
# in any language reads them with one array view and no per-element calls.
# A valid batch has: every column exactly recordCount entries long; the
# non-null key lengths summing to the size of `keys`, likewise for values;
# headers sorted by index, each index < recordCount.

@0xf7343c24c0506906;

struct RecordBatch {
  recordCount @0 :UInt32;        # number of records, >= 1
  baseTimestampMs @1 :Int64;     # smallest record timestamp, ms since the epoch
  maxTimestampMs @2 :Int64;      # largest record timestamp, ms since the epoch
  producerId @3 :Int64 = -1;     # idempotent producer id; -1 when not idempotent
  baseSequence @4 :Int32 = -1;   # sequence number of record 0 for producerId
  timestampDeltasMs @5 :Data;    # recordCount x UInt32 LE: timestamp - baseTimestampMs
  keyLengths @6 :Data;           # recordCount x Int32 LE: key length, -1 = null key
  keys @7 :Data;                 # the non-null keys, concatenated
  valueLengths @8 :Data;         # recordCount x Int32 LE: value length, -1 = null value
  values @9 :Data;               # the non-null values, concatenated
  headers @10 :List(RecordHeaders);  # only for records that carry headers
}

struct RecordHeaders {
  index @0 :UInt32;              # which record (0-based within the batch)
  entries @1 :List(Header);
}

struct Header {
  key @0 :Text;
  value @1 :Data;   # unset: a null value (as Kafka's -1 length); set and empty: b""
}
