"""The few bytes of a shard's Reply header that the router reads or rewrites.

Runs in the router's loop thread (pure functions; any thread may call them).
The router relays replies without decoding them; three features need a look
inside: the fetch bytes a client has in flight are uncounted by request id
(router/requests_in_flight.py), the ACL cuts fetchOffsets answers (router/security.py), which it finds
by the Reply's union discriminant, and quotas write ``throttleTimeMs``
(router/quotas.py). Both read the Reply in its canonical shape, the one
pycapnp's ``to_bytes`` and protocol_hot.py write for every reply (all
little-endian, offsets in bytes):

     0  UInt32  segment count - 1 = 0
     4  UInt32  segment size in words (the rest of the message)
     8  root struct pointer: UInt32 0 (offset 0), UInt16 data words (2 for a
        Reply), UInt16 pointer words
    16  UInt64  requestId
    24  UInt16  union discriminant (schemas/protocol.capnp, Reply's union)
    26  2 bytes zero
    28  UInt32  throttleTimeMs

A header of any other shape is left alone: ``kind_code`` says None and
``with_throttle_time`` returns None.
"""

from __future__ import annotations

import struct

from plinth.schemas import protocol as protocol_schema

_PREFIX = struct.Struct("<IIIHHQH")      # table, root pointer, requestId, discriminant
_THROTTLE_TIME_MS = struct.Struct("<I")
_THROTTLE_TIME_OFFSET = 28
_WORD_BYTES = 8
_DATA_WORDS_MIN = 2                       # throttleTimeMs sits in the second data word
THROTTLE_TIME_MS_MAX = 2**32 - 1          # UInt32

# The Reply union's discriminant of the fetchOffsets answer, from the schema.
COMMITTED = protocol_schema.Reply.schema.fields["committed"].proto.discriminantValue
# ... and of a reply with no result: an error (or a plain ok).
NO_RESULT = protocol_schema.Reply.schema.fields["none"].proto.discriminantValue


def request_id(header) -> int | None:
    """The requestId of a canonical Reply header, else None."""
    prefix = _prefix(header)
    return None if prefix is None else prefix[5]


def kind_code(header) -> int | None:
    """The union discriminant of a canonical Reply header, else None."""
    prefix = _prefix(header)
    return None if prefix is None else prefix[6]


def with_throttle_time(header, throttle_ms: int) -> bytes | None:
    """A copy of a canonical Reply header with throttleTimeMs set, else None."""
    if _prefix(header) is None:
        return None
    patched = bytearray(header)
    _THROTTLE_TIME_MS.pack_into(patched, _THROTTLE_TIME_OFFSET,
                                max(0, min(int(throttle_ms), THROTTLE_TIME_MS_MAX)))
    return bytes(patched)


def _prefix(header) -> tuple | None:
    size = len(header)
    if size < _THROTTLE_TIME_OFFSET + _THROTTLE_TIME_MS.size or size % _WORD_BYTES:
        return None
    prefix = _PREFIX.unpack_from(header, 0)
    segments, words, root_lower, data_words = prefix[:4]
    if segments != 0 or words * _WORD_BYTES != size - _WORD_BYTES or root_lower != 0 \
            or data_words < _DATA_WORDS_MIN:
        return None
    return prefix
