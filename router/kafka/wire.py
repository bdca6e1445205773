"""Kafka's primitive wire types: a bounds-checked Reader and a buffer-list Writer.

Pure code; any thread may call it (a Reader or Writer belongs to the one call
that made it). Every number is big-endian (network order), as Kafka writes it:

    int8 int16 int32 int64     two's complement, 1/2/4/8 bytes
    uint16 uint32              unsigned, 2/4 bytes
    float64                    IEEE 754 double, 8 bytes
    bool                       int8: 0 false, anything else true
    uuid                       16 bytes (a uuid.UUID; all zero = Kafka's ZERO_UUID)
    unsigned varint            7 bits a byte, low group first, high bit = more;
                               at most 5 bytes (32 bits)
    varint / varlong           zigzag ((n << 1) ^ (n >> 31|63)) in an unsigned
                               varint of at most 5 / 10 bytes
    string                     int16 length, then UTF-8; nullable: length -1 = null
    compact string             unsigned varint length + 1 (0 = null), then UTF-8
    bytes                      int32 length, then the bytes; nullable: -1 = null
    compact bytes              unsigned varint length + 1 (0 = null), then the bytes
    array                      int32 count (-1 = null), then the elements
    compact array              unsigned varint count + 1 (0 = null), then the elements
    tagged fields              unsigned varint count, then per field: unsigned varint
                               tag (ascending), unsigned varint size, size bytes
    records                    bytes / compact bytes holding Kafka record batches

"compact" forms are those of a message's flexible versions (KIP-482); the
codec (codec.py) picks the form per version.

Reading. A Reader walks one memoryview between ``pos`` and ``end``. Each read
checks the bytes left first and raises KafkaDecodeError (plinth/errors.py)
with the position and the buffer's length - never IndexError or struct.error.
Each declared length or count is checked against the bytes left *before*
anything is allocated: an array count must fit ``count * element_bytes_min``
in what is left, so a declared 2**31 elements fails at once. Strings and bytes
are copied out (small); ``records`` are a zero-copy memoryview of the frame.

Writing. A Writer appends small fields to a bytearray and large buffers (a
Fetch response's record batches) as buffers of their own, so ``finish()``
returns a list for ``socket.sendmsg``/``writelines`` in which the records are
never copied. Writing a value that does not fit its type is a programmer
error (AssertionError or struct.error), not a decode error.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence

from plinth.errors import KafkaDecodeError

_INT8 = struct.Struct(">b")
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_UINT16 = struct.Struct(">H")
_UINT32 = struct.Struct(">I")
_FLOAT64 = struct.Struct(">d")

UUID_ZERO = uuid.UUID(int=0)
STRING_BYTES_MAX = 0x7FFF            # Kafka's limit for a string, in both forms
UNSIGNED_VARINT_BYTES_MAX = 5        # 32 bits in groups of 7
VARLONG_BYTES_MAX = 10               # 64 bits in groups of 7
# A buffer at least this long is passed on by reference rather than copied into
# the writer's bytearray: below it a copy is cheaper than another iovec.
ZERO_COPY_BYTES_MIN = 4096

__all__ = ["Reader", "Writer", "UUID_ZERO", "STRING_BYTES_MAX"]


class Reader:
    """Reads Kafka primitives from ``data[pos:end]``, every read bounds-checked."""

    __slots__ = ("view", "pos", "end")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0, end: int | None = None):
        view = data if isinstance(data, memoryview) else memoryview(data)
        self.view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        self.pos = pos
        self.end = len(self.view) if end is None else end

    def left(self) -> int:
        return self.end - self.pos

    def fail(self, reason: str, position: int | None = None) -> KafkaDecodeError:
        return KafkaDecodeError(reason, self.pos if position is None else position, self.end)

    def take(self, count: int) -> int:
        """Claims ``count`` bytes; returns where they start."""
        start = self.pos
        if count > self.end - start:
            raise self.fail(f"needs {count} bytes, {self.end - start} left")
        self.pos = start + count
        return start

    def _fixed(self, layout: struct.Struct):
        start = self.pos
        if layout.size > self.end - start:
            raise self.fail(f"needs {layout.size} bytes, {self.end - start} left")
        self.pos = start + layout.size
        return layout.unpack_from(self.view, start)[0]

    def int8(self) -> int:
        return self._fixed(_INT8)

    def int16(self) -> int:
        return self._fixed(_INT16)

    def int32(self) -> int:
        return self._fixed(_INT32)

    def int64(self) -> int:
        return self._fixed(_INT64)

    def uint16(self) -> int:
        return self._fixed(_UINT16)

    def uint32(self) -> int:
        return self._fixed(_UINT32)

    def float64(self) -> float:
        return self._fixed(_FLOAT64)

    def bool(self) -> bool:
        return self._fixed(_INT8) != 0

    def uuid(self) -> uuid.UUID:
        start = self.take(16)
        return uuid.UUID(bytes=bytes(self.view[start:start + 16]))

    def unsigned_varint(self, bytes_max: int = UNSIGNED_VARINT_BYTES_MAX) -> int:
        start = self.pos
        if start < self.end and self.view[start] < 0x80:    # one byte: most lengths and counts
            self.pos = start + 1
            return self.view[start]
        value = shift = 0
        for _ in range(bytes_max):
            byte = self.view[self.take(1)]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise self.fail(f"varint longer than {bytes_max} bytes", start)

    def varint(self) -> int:
        raw = self.unsigned_varint() & 0xFFFF_FFFF
        return (raw >> 1) ^ -(raw & 1)

    def varlong(self) -> int:
        raw = self.unsigned_varint(VARLONG_BYTES_MAX) & 0xFFFF_FFFF_FFFF_FFFF
        return (raw >> 1) ^ -(raw & 1)

    def length(self, compact: bool, wide: bool) -> int:
        """A string/bytes length or an array count: -1 = null. ``wide`` = int32 (bytes,
        arrays), else int16 (strings); compact lengths are varints plus one."""
        if compact:
            return self.unsigned_varint() - 1
        length = self.int32() if wide else self.int16()
        if length < -1:
            raise self.fail(f"negative length {length}", self.pos - (4 if wide else 2))
        return length

    def _span(self, length: int, nullable: bool, what: str) -> int | None:
        if length == -1:
            if not nullable:
                raise self.fail(f"null for a non-nullable {what}")
            return None
        return self.take(length)

    def string(self, compact: bool, nullable: bool) -> str | None:
        length = self.length(compact, wide=False)
        if length > STRING_BYTES_MAX:
            raise self.fail(f"string of {length} bytes, more than {STRING_BYTES_MAX}")
        start = self._span(length, nullable, "string")
        if start is None:
            return None
        try:
            return str(self.view[start:start + length], "utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"string is not UTF-8 ({e.reason})", start) from None

    def bytes(self, compact: bool, nullable: bool) -> bytes | None:
        view = self.bytes_view(compact, nullable)
        return None if view is None else bytes(view)

    def bytes_view(self, compact: bool, nullable: bool) -> memoryview | None:
        """Bytes as a zero-copy view of the frame (``records``)."""
        length = self.length(compact, wide=True)
        start = self._span(length, nullable, "bytes")
        return None if start is None else self.view[start:start + length]

    def array_count(self, compact: bool, nullable: bool, element_bytes_min: int) -> int:
        """An array's element count (-1 = null), checked to fit the bytes left."""
        start = self.pos
        count = self.length(compact, wide=True)
        if count == -1:
            if not nullable:
                raise self.fail("null for a non-nullable array", start)
            return -1
        if count * element_bytes_min > self.end - self.pos:
            raise self.fail(f"array of {count} elements of at least {element_bytes_min} bytes, "
                            f"{self.end - self.pos} bytes left", start)
        return count

    def tag_header(self) -> tuple[int, int]:
        """One tagged field's (tag, size); the size is checked against the bytes left."""
        tag = self.unsigned_varint()
        start = self.pos
        size = self.unsigned_varint()
        if size > self.end - self.pos:
            raise self.fail(f"tagged field {tag} of {size} bytes, {self.end - self.pos} left", start)
        return tag, size


class Writer:
    """Appends Kafka primitives; ``finish()`` gives the buffers to send."""

    __slots__ = ("chunks", "buf")

    def __init__(self):
        self.chunks: list[bytes | bytearray | memoryview] = []
        self.buf = bytearray()

    def int8(self, value: int) -> None:
        self.buf += _INT8.pack(value)

    def int16(self, value: int) -> None:
        self.buf += _INT16.pack(value)

    def int32(self, value: int) -> None:
        self.buf += _INT32.pack(value)

    def int64(self, value: int) -> None:
        self.buf += _INT64.pack(value)

    def uint16(self, value: int) -> None:
        self.buf += _UINT16.pack(value)

    def uint32(self, value: int) -> None:
        self.buf += _UINT32.pack(value)

    def float64(self, value: float) -> None:
        self.buf += _FLOAT64.pack(value)

    def bool(self, value: bool) -> None:
        self.buf.append(1 if value else 0)

    def uuid(self, value: uuid.UUID) -> None:
        self.buf += value.bytes

    def unsigned_varint(self, value: int) -> None:
        assert value >= 0, f"unsigned varint {value} is negative"
        while value > 0x7F:
            self.buf.append((value & 0x7F) | 0x80)
            value >>= 7
        self.buf.append(value)

    def varint(self, value: int) -> None:
        assert -(1 << 31) <= value < (1 << 31), f"varint {value} does not fit 32 bits"
        self.unsigned_varint(((value << 1) ^ (value >> 31)) & 0xFFFF_FFFF)

    def varlong(self, value: int) -> None:
        assert -(1 << 63) <= value < (1 << 63), f"varlong {value} does not fit 64 bits"
        self.unsigned_varint(((value << 1) ^ (value >> 63)) & 0xFFFF_FFFF_FFFF_FFFF)

    def length(self, length: int, compact: bool, wide: bool) -> None:
        """A length or count, -1 = null (see Reader.length)."""
        if compact:
            self.unsigned_varint(length + 1)
        elif wide:
            self.int32(length)
        else:
            self.int16(length)

    def string(self, value: str | None, compact: bool) -> None:
        if value is None:
            self.length(-1, compact, wide=False)
            return
        encoded = value.encode("utf-8")
        assert len(encoded) <= STRING_BYTES_MAX, \
            f"string of {len(encoded)} bytes, more than {STRING_BYTES_MAX}: {value[:40]!r}..."
        self.length(len(encoded), compact, wide=False)
        self.buf += encoded

    def bytes(self, value: bytes | bytearray | memoryview | None, compact: bool) -> None:
        if value is None:
            self.length(-1, compact, wide=True)
            return
        self.length(len(value), compact, wide=True)
        self.buf += value

    def records(self, value, compact: bool) -> None:
        """Nullable bytes given as one buffer or a list of buffers, each passed on
        uncopied when large (ZERO_COPY_BYTES_MIN)."""
        if value is None:
            self.length(-1, compact, wide=True)
            return
        buffers: Sequence = value if isinstance(value, (list, tuple)) else (value,)
        self.length(sum(_nbytes(b) for b in buffers), compact, wide=True)
        for buffer in buffers:
            if _nbytes(buffer) < ZERO_COPY_BYTES_MIN:
                self.buf += buffer
                continue
            if self.buf:
                self.chunks.append(self.buf)
                self.buf = bytearray()
            self.chunks.append(buffer)

    def finish(self) -> list[bytes | bytearray | memoryview]:
        """Every buffer written, in order; the Writer is spent."""
        if self.buf:
            self.chunks.append(self.buf)
        chunks, self.chunks, self.buf = self.chunks, [], bytearray()
        return chunks


def _nbytes(buffer) -> int:
    return buffer.nbytes if isinstance(buffer, memoryview) else len(buffer)
