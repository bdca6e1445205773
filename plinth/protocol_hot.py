"""Hand-packed Cap'n Proto for the four messages on the hot path.

Every produce and every fetch crosses five codecs: the client encodes the
Request, the router and the shard decode it, the shard encodes the Reply and
the client decodes it. pycapnp spends 2 µs encoding and 7–10 µs decoding each
of these small messages; packing them with ``struct`` costs well under 1 µs and
2 µs. The bytes are exactly what pycapnp writes for the same values
(tests/plinth/test_protocol_hot.py checks it field by field), so the schema in
``schemas/protocol.capnp`` stays the one documented format and any Cap'n Proto
library reads them.

Decoding accepts only the canonical shape below (one segment, the sizes and
pointer offsets this module writes). Anything else, including an equally valid
encoding by another library, returns None and the caller decodes it with
pycapnp, which also produces every error message. So this module never raises
on untrusted bytes and never accepts a message pycapnp would read differently.

Byte layouts (all little-endian; a "word" is 8 bytes; offsets in bytes):

    segment table   0  UInt32  segment count - 1 = 0
                    4  UInt32  segment size in words (the rest of the message)
    root pointer    8  struct pointer, offset 0: UInt32 0, UInt16 data words,
                       UInt16 pointer words

    Request (data 2 words, pointers 1)
                   16  UInt64  requestId
                   24  UInt16  union discriminant: 0 produce, 1 fetch
                   26  UInt16  timeoutMs: 0 (changes only; nonzero goes to pycapnp)
                   28  4 bytes zero (addShards/removeShards share 28..31; unused here)
                   32  struct pointer to the body, offset 0
      Produce body (data 1 word, pointers 1)
                   40  UInt32  partition
                   44  Int8    acks XOR 1 (the schema's default is 1)
                   45  UInt8   batchFormat (0 Plinth RecordBatch, 2 Kafka RecordBatch v2)
                   46  2 bytes zero
                   48  text pointer: UInt32 1 (offset 0, list), UInt32 (len + 1) << 3 | 2
                   56  topic, UTF-8, NUL, zero padding to a word
      Fetch body (data 3 words, pointers 1)
                   40  UInt32  partition
                   44  UInt32  maxBytes
                   48  Int64   offset
                   56  UInt32  maxWaitMs
                   60  4 bytes zero
                   64  text pointer, then the topic as for Produce

    Reply (data 2 words, pointers 3)
                   16  UInt64  requestId
                   24  UInt16  union discriminant: 1 produce, 2 fetch
                   26  2 bytes zero
                   28  UInt32  throttleTimeMs: 0 here (a throttled reply, rare,
                               is decoded by pycapnp)
                   32  error pointer: null (no error; errors go through pycapnp)
                   40  struct pointer to the body, offset 1 (past the next pointer)
                   48  groupListings pointer: null (listGroups replies only)
      ProduceResult (data 1 word)   56  Int64 baseOffset
      FetchResult (data 2 words)    56  Int64 highWatermark, 64 Int64 logStartOffset
"""

from __future__ import annotations

import struct

_WORD_BYTES = 8
_TABLE = struct.Struct("<II")                    # segment count - 1, segment words
_HEADER_WORDS = 4                                # root, 2 data words, 1st body pointer
# Root pointer, data section and body pointer of a Request, as one record.
_REQUEST_HEAD = struct.Struct("<IIQHHIQ")
_PRODUCE_BODY = struct.Struct("<IbBHII")         # partition, acks ^ 1, batchFormat, 0, text ptr
_FETCH_BODY = struct.Struct("<IIqIxxxxII")       # partition, maxBytes, offset, maxWaitMs, text ptr
_REPLY_HEAD = struct.Struct("<IIQHHIQQQ")        # root, data, error, body, groupListings
_INT64 = struct.Struct("<q")
_INT64_PAIR = struct.Struct("<qq")

_STRUCT_POINTER_UPPER_REQUEST = 2 | 1 << 16     # 2 data words, 1 pointer
_STRUCT_POINTER_UPPER_REPLY = 2 | 3 << 16       # 2 data words, 3 pointers
_BODY_POINTER_PRODUCE = 1 | 1 << 16
_BODY_POINTER_FETCH = 3 | 1 << 16
_REPLY_BODY_POINTER_LOWER = 1 << 2              # struct pointer, offset 1: past groupListings
_BODY_POINTER_PRODUCE_RESULT = 1
_BODY_POINTER_FETCH_RESULT = 2
_TEXT_POINTER_LOWER = 1                          # list pointer, offset 0
_TEXT_ELEMENT_BYTE = 2                           # list element size code: 1 byte
_PRODUCE, _FETCH = 0, 1                          # Request union discriminants
_REPLY_PRODUCE, _REPLY_FETCH = 1, 2              # Reply union discriminants
_ACKS_DEFAULT = 1


def _padded_text(topic: str) -> tuple[bytes, int]:
    """(UTF-8 + NUL + padding, element count) of a Text field."""
    raw = topic.encode()
    count = len(raw) + 1
    return raw + bytes(_WORD_BYTES - len(raw) % _WORD_BYTES), count


# --- Encoding (client: requests; shard: replies) ------------------------------

def encode_produce(request_id: int, topic: str, partition: int, acks: int,
                   batch_format: int = 0) -> bytes:
    text, count = _padded_text(topic)
    words = _HEADER_WORDS + 2 + len(text) // _WORD_BYTES
    return (_TABLE.pack(0, words)
            + _REQUEST_HEAD.pack(0, _STRUCT_POINTER_UPPER_REQUEST, request_id, _PRODUCE, 0, 0,
                                 _BODY_POINTER_PRODUCE << 32)
            + _PRODUCE_BODY.pack(partition, acks ^ _ACKS_DEFAULT, batch_format, 0,
                                 _TEXT_POINTER_LOWER, count << 3 | _TEXT_ELEMENT_BYTE)
            + text)


def encode_fetch(request_id: int, topic: str, partition: int, offset: int,
                 bytes_max: int, wait_ms_max: int) -> bytes:
    text, count = _padded_text(topic)
    words = _HEADER_WORDS + 4 + len(text) // _WORD_BYTES
    return (_TABLE.pack(0, words)
            + _REQUEST_HEAD.pack(0, _STRUCT_POINTER_UPPER_REQUEST, request_id, _FETCH, 0, 0,
                                 _BODY_POINTER_FETCH << 32)
            + _FETCH_BODY.pack(partition, bytes_max, offset, wait_ms_max, _TEXT_POINTER_LOWER,
                               count << 3 | _TEXT_ELEMENT_BYTE)
            + text)


def encode_produce_reply(request_id: int, base_offset: int) -> bytes:
    return (_TABLE.pack(0, 7)
            + _REPLY_HEAD.pack(0, _STRUCT_POINTER_UPPER_REPLY, request_id, _REPLY_PRODUCE, 0, 0,
                               0, _BODY_POINTER_PRODUCE_RESULT << 32 | _REPLY_BODY_POINTER_LOWER,
                               0)
            + _INT64.pack(base_offset))


def encode_fetch_reply(request_id: int, high_watermark: int, log_start_offset: int) -> bytes:
    return (_TABLE.pack(0, 8)
            + _REPLY_HEAD.pack(0, _STRUCT_POINTER_UPPER_REPLY, request_id, _REPLY_FETCH, 0, 0,
                               0, _BODY_POINTER_FETCH_RESULT << 32 | _REPLY_BODY_POINTER_LOWER,
                               0)
            + _INT64_PAIR.pack(high_watermark, log_start_offset))


# --- Decoding (router, shard: requests; client: replies) ----------------------

def decode_request(frame) -> tuple | None:
    """("produce", request_id, topic, partition, acks, batch_format) or ("fetch", request_id, topic,
    partition, offset, bytes_max, wait_ms_max) of a canonical produce or fetch Request
    (the fields of protocol.ProduceRequest and FetchRequest), else None (decode it with
    pycapnp)."""
    size = len(frame)
    if size < 8 + (_HEADER_WORDS + 3) * _WORD_BYTES or size % _WORD_BYTES:
        return None
    segments, words = _TABLE.unpack_from(frame, 0)
    if segments != 0 or words * _WORD_BYTES != size - 8:
        return None
    root, root_upper, request_id, kind, timeout_ms, pad32, body_pointer = \
        _REQUEST_HEAD.unpack_from(frame, 8)
    if root != 0 or root_upper != _STRUCT_POINTER_UPPER_REQUEST or timeout_ms or pad32:
        return None
    if kind == _PRODUCE and body_pointer == _BODY_POINTER_PRODUCE << 32:
        partition, acks, batch_format, pad, text_lower, text_upper = \
            _PRODUCE_BODY.unpack_from(frame, 40)
        topic = _text(frame, 56, text_lower, text_upper)
        if topic is None or pad:
            return None
        return "produce", request_id, topic, partition, acks ^ _ACKS_DEFAULT, batch_format
    if kind == _FETCH and body_pointer == _BODY_POINTER_FETCH << 32 and size >= 8 + 9 * 8:
        partition, bytes_max, offset, wait_ms_max, text_lower, text_upper = \
            _FETCH_BODY.unpack_from(frame, 40)
        topic = _text(frame, 72, text_lower, text_upper)
        if topic is None:
            return None
        return "fetch", request_id, topic, partition, offset, bytes_max, wait_ms_max
    return None


def _text(frame, start: int, lower: int, upper: int) -> str | None:
    """The Text whose list pointer (lower, upper) points at ``start``, filling the
    rest of the message exactly; None for any other shape."""
    if lower != _TEXT_POINTER_LOWER or upper & 7 != _TEXT_ELEMENT_BYTE:
        return None
    count = upper >> 3
    padded = count + (-count) % _WORD_BYTES
    if count < 1 or start + padded != len(frame) or frame[start + count - 1] != 0:
        return None
    try:
        return bytes(frame[start:start + count - 1]).decode()
    except UnicodeDecodeError:
        return None


def decode_reply(frame) -> tuple | None:
    """(request_id, kind, base_offset, high_watermark, log_start_offset) of a canonical
    produce or fetch Reply without an error, else None (decode it with pycapnp)."""
    size = len(frame)
    if size not in (64, 72):
        return None
    segments, words = _TABLE.unpack_from(frame, 0)
    root, root_upper, request_id, kind, pad16, pad32, error_pointer, body_pointer, listings = \
        _REPLY_HEAD.unpack_from(frame, 8)
    if (segments != 0 or words * _WORD_BYTES != size - 8 or root != 0
            or root_upper != _STRUCT_POINTER_UPPER_REPLY or pad16 or pad32 or error_pointer
            or listings):
        return None
    if kind == _REPLY_PRODUCE and size == 64 and \
            body_pointer == _BODY_POINTER_PRODUCE_RESULT << 32 | _REPLY_BODY_POINTER_LOWER:
        return request_id, "produce", _INT64.unpack_from(frame, 56)[0], -1, -1
    if kind == _REPLY_FETCH and size == 72 and \
            body_pointer == _BODY_POINTER_FETCH_RESULT << 32 | _REPLY_BODY_POINTER_LOWER:
        high_watermark, log_start_offset = _INT64_PAIR.unpack_from(frame, 56)
        return request_id, "fetch", -1, high_watermark, log_start_offset
    return None
