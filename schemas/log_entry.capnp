# LogEntryHeader: the frame in front of every RecordBatch in a segment file,
# and in a fetch reply's payload, which is a run of segment bytes.
#
# A log entry is a LogEntryHeader message immediately followed by the bytes of
# one RecordBatch message (record_batch.capnp):
#
#   [LogEntryHeader message: 48 bytes][RecordBatch message: batchBytes bytes]
#
# The header is an ordinary single-segment Cap'n Proto message, so any Cap'n
# Proto library can read it, but its size never changes, which is what lets a
# reader step from entry to entry. Its 48 bytes are, little-endian:
#
#   offset size  field
#        0    4  segment count - 1        always 0
#        4    4  segment size in words    always 5
#        8    8  root struct pointer      always 0x0000000400000000
#                                         (offset 0, 4 data words, 0 pointers)
#       16    8  baseOffset      Int64    offset of the batch's first record
#       24    8  maxTimestampMs  Int64    largest record timestamp in the batch
#       32    4  batchBytes      UInt32   size of the RecordBatch that follows
#       36    4  recordCount     UInt32   records in the batch
#       40    4  crc             UInt32   CRC-32C, see below
#       44    4  attributes      UInt32   reserved: always 0; a reader
#                                         treats any other value as corruption
#                                         (the CRC does not cover this field)
#
# The first 16 bytes are constant and double as the entry's magic number.
# crc is CRC-32C (Castagnoli) over bytes 16..40 of the header (baseOffset,
# maxTimestampMs, batchBytes, recordCount) followed by the batchBytes bytes of
# the RecordBatch. It is computed by the shard when it assigns baseOffset, and
# checked by recovery and by consumers. It is needed: random bit flips in a
# Cap'n Proto message still parse as a valid message about half the time.

@0xe9caf4138b14e34c;

struct LogEntryHeader {
  baseOffset @0 :Int64;
  maxTimestampMs @1 :Int64;
  batchBytes @2 :UInt32;
  recordCount @3 :UInt32;
  crc @4 :UInt32;
  attributes @5 :UInt32;
}
