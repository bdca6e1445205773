"""The Kafka wire codec: request and response frames to plain dicts and back.

Pure code; any thread may call it (the compiled tables are built once at
import and only read after). The listener (listener.py) and the API handlers
use four calls:

    decode_request(frame)          -> (RequestHeader, body dict)
    encode_response(header, body)  -> [buffers] of the whole response frame
    encode_request(header, body)   -> [buffers] (clients and tests)
    decode_response(api_key, api_version, frame) -> (correlation_id, body dict)

A frame on the wire is a 4-byte big-endian size, then the message. ``decode_*``
take the message WITHOUT its size; ``encode_*`` return it WITH its size, as a
list of buffers for ``socket.sendmsg``/``writelines`` in which a Fetch
response's records are never copied (wire.py). The headers:

    request header v1     int16 api_key, int16 api_version, int32 correlation_id,
                          string client_id (nullable, int16 length, never compact)
    request header v2     v1, then tagged fields       (flexible versions)
    response header v0    int32 correlation_id
    response header v1    v0, then tagged fields       (flexible versions;
                          ApiVersions' response header is always v0)

Bodies. A body is a dict keyed by the snake_case field names of messages.py;
an array of structs is a list of dicts, a struct ("{}") a dict. Decoding gives
every field the message has in any supported version: the ones not on the
wire in this version, and tagged fields not sent, hold their default
(messages.py), so a handler reads ``body["topic_id"]`` without a version test.
``records`` decode as a zero-copy memoryview of the frame (or None). Encoding
takes only what the handler set: a missing field encodes as its default, a
field the version does not have is left out, and an unknown name is a
programmer error (AssertionError). ``records`` encode from None, one buffer or
a list of buffers. Strings are str, bytes are bytes, uuids uuid.UUID, bools bool.

Errors. Bytes that do not decode raise KafkaDecodeError naming the message,
the field path, the position and the length; an unknown API key or a version
outside SUPPORTED_VERSIONS raises KafkaUnsupportedVersionError carrying the
decoded RequestHeader (plinth/errors.py). Bytes left over after a request's
last field are ignored, as Kafka ignores them: librdkafka's Metadata v9+
request for all topics leaves its 4-byte array-count placeholder unshrunk, so
Kafka reads the placeholder's zeros as null topics, false, false and no tags,
and never looks at the 3 bytes librdkafka meant for those fields. A response
with bytes left over is malformed (decode_response: clients and tests).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

from plinth.errors import KafkaDecodeError, KafkaUnsupportedVersionError
from plinth.router.kafka.messages import APIS, NULL, Api, Field, parse_versions
from plinth.router.kafka.wire import UUID_ZERO, Reader, Writer

__all__ = ["RequestHeader", "API_KEYS", "SUPPORTED_VERSIONS", "API_VERSIONS_KEY",
           "decode_request", "encode_response", "encode_request", "decode_response",
           "supported_api_keys", "is_flexible"]


class RequestHeader(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


API_KEYS: dict[str, int] = {api.name: api.key for api in APIS}
SUPPORTED_VERSIONS: dict[int, tuple[int, int]] = {api.key: api.versions for api in APIS}
API_VERSIONS_KEY = API_KEYS["ApiVersions"]
_API_BY_KEY: dict[int, Api] = {api.key: api for api in APIS}
_SIZE = struct.Struct(">i")
_SIZE_PLACEHOLDER = b"\0\0\0\0"

_FIXED_BYTES = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint16": 2, "uint32": 4,
                "float64": 8, "bool": 1, "uuid": 16}
_TYPE_DEFAULTS = {"int8": 0, "int16": 0, "int32": 0, "int64": 0, "uint16": 0, "uint32": 0,
                  "float64": 0.0, "bool": False, "uuid": UUID_ZERO, "string": "", "bytes": b"",
                  "records": None}
_MISSING = object()


def _in(spec: str, version: int) -> bool:
    low, high = parse_versions(spec)
    return low <= version <= high


class _Slot(NamedTuple):
    """One field compiled for one version."""

    name: str
    read: Callable[[Reader], object]
    write: Callable[[Writer, object], None]
    default: Callable[[], object]     # a fresh default (lists and dicts are not shared)
    tag: int | None


class _Struct:
    """A struct's fields compiled for one version: how to read and write them."""

    __slots__ = ("wire", "tagged", "absent", "names", "flexible", "bytes_min")

    def __init__(self, fields: tuple[Field, ...], version: int, flexible: bool):
        slots = [_compile(f, version, flexible) for f in fields if _in(f.versions, version)]
        self.wire = tuple(s for s in slots if s.tag is None or not flexible)
        self.tagged = {s.tag: s for s in slots if s.tag is not None and flexible}
        self.absent = tuple((f.name, _default_of(f, version, flexible)) for f in fields
                            if not _in(f.versions, version))
        self.names = frozenset(f.name for f in fields)
        self.flexible = flexible
        self.bytes_min = sum(_bytes_min(f, version, flexible) for f in fields
                             if _in(f.versions, version) and (f.tag is None or not flexible))
        self.bytes_min += 1 if flexible else 0     # the tagged-field count

    def decode(self, r: Reader) -> dict:
        out = {}
        for slot in self.wire:
            try:
                out[slot.name] = slot.read(r)
            except KafkaDecodeError as e:
                e.add_field(slot.name)
                raise
        if self.flexible:
            for slot in self.tagged.values():
                out[slot.name] = slot.default()
            try:
                self._read_tags(r, out)
            except KafkaDecodeError as e:
                if not e.path:
                    e.add_field("<tagged fields>")
                raise
        for name, default in self.absent:
            out[name] = default()
        return out

    def _read_tags(self, r: Reader, out: dict) -> None:
        count = r.unsigned_varint()
        if count * 2 > r.left():         # a tag and a size at least
            raise r.fail(f"{count} tagged fields, {r.left()} bytes left")
        for _ in range(count):
            tag, size = r.tag_header()
            slot = self.tagged.get(tag)
            if slot is not None:         # unknown tags are skipped, as Kafka does
                try:
                    out[slot.name] = slot.read(Reader(r.view, r.pos, r.pos + size))
                except KafkaDecodeError as e:
                    e.add_field(slot.name)
                    raise
            r.pos += size

    def encode(self, w: Writer, value: dict) -> None:
        assert value.keys() <= self.names, \
            f"unknown fields {sorted(value.keys() - self.names)}; known: {sorted(self.names)}"
        for slot in self.wire:
            item = value.get(slot.name, _MISSING)
            slot.write(w, slot.default() if item is _MISSING else item)
        if self.flexible:
            self._write_tags(w, value)

    def _write_tags(self, w: Writer, value: dict) -> None:
        present = []
        for tag in sorted(self.tagged):
            slot = self.tagged[tag]
            item = value.get(slot.name, _MISSING)
            if item is not _MISSING and item != slot.default():
                present.append((slot, item))
        w.unsigned_varint(len(present))
        for slot, item in present:
            inner = Writer()
            slot.write(inner, item)
            data = b"".join(inner.finish())
            w.unsigned_varint(slot.tag)
            w.unsigned_varint(len(data))
            w.buf += data


def _nullable(field: Field, version: int) -> bool:
    return bool(field.nullable) and _in(field.nullable, version)


def _default_of(field: Field, version: int, flexible: bool) -> Callable[[], object]:
    if field.default is NULL:
        return lambda: None
    if field.default is not None:
        return lambda: field.default
    if field.type.startswith("[]"):
        return list
    if field.type == "{}":
        inner = _Struct(field.fields, version, flexible)
        return lambda: _struct_default(inner)
    value = _TYPE_DEFAULTS[field.type]
    return lambda: value


def _struct_default(struct_: _Struct) -> dict:
    out = {slot.name: slot.default() for slot in struct_.wire}
    out.update((slot.name, slot.default()) for slot in struct_.tagged.values())
    out.update((name, default()) for name, default in struct_.absent)
    return out


def _bytes_min(field: Field, version: int, flexible: bool) -> int:
    if field.type in _FIXED_BYTES:
        return _FIXED_BYTES[field.type]
    if field.type == "{}":
        if _nullable(field, version):
            return 1   # the presence byte of a null struct
        return _Struct(field.fields, version, flexible).bytes_min
    if flexible:
        return 1
    return 2 if field.type == "string" else 4


def _compile(field: Field, version: int, flexible: bool) -> _Slot:
    nullable = _nullable(field, version)
    read, write = _codec_of(field, version, flexible, nullable)
    if not nullable and field.type not in _FIXED_BYTES:    # (struct.pack refuses None itself)
        write = _refusing_null(field.name, write)
    return _Slot(field.name, read, write, _default_of(field, version, flexible), field.tag)


def _refusing_null(name: str, write):
    def write_checked(w: Writer, value) -> None:
        assert value is not None, f"field {name} is not nullable in this version"
        write(w, value)
    return write_checked


def _codec_of(field: Field, version: int, flexible: bool, nullable: bool):
    """(read, write) for a field's type in one version."""
    kind = field.type
    if kind in _FIXED_BYTES:
        return getattr(Reader, kind), getattr(Writer, kind)
    if kind == "string":
        return (lambda r: r.string(flexible, nullable)), (lambda w, v: w.string(v, flexible))
    if kind == "bytes":
        return (lambda r: r.bytes(flexible, nullable)), (lambda w, v: w.bytes(v, flexible))
    if kind == "records":
        return (lambda r: r.bytes_view(flexible, nullable)), (lambda w, v: w.records(v, flexible))
    if kind == "{}":
        inner = _Struct(field.fields, version, flexible)
        if nullable:
            return _nullable_struct_codec(inner)
        return inner.decode, inner.encode
    if kind == "[]":
        inner = _Struct(field.fields, version, flexible)
        element = (inner.decode, inner.encode, max(1, inner.bytes_min))
    else:
        element_kind = kind[2:]
        element_field = Field(field.name, element_kind, field.versions)
        read, write = _codec_of(element_field, version, flexible, nullable=False)
        element = (read, write, _bytes_min(element_field, version, flexible))
    return _array_codec(flexible, nullable, *element)


def _nullable_struct_codec(inner: _Struct):
    """A nullable struct, as Kafka writes one: int8 -1 for null, else 1 and the struct
    (DescribeTopicPartitions' cursor). Read as Kafka reads it: any negative byte is
    null, any other a struct."""
    def read(r: Reader):
        if r.int8() < 0:
            return None
        return inner.decode(r)

    def write(w: Writer, value) -> None:
        if value is None:
            w.int8(-1)
            return
        w.int8(1)
        inner.encode(w, value)
    return read, write


def _array_codec(flexible: bool, nullable: bool, read_element, write_element, element_bytes_min):
    def read(r: Reader):
        count = r.array_count(flexible, nullable, element_bytes_min)
        if count == -1:
            return None
        out = []
        for index in range(count):
            try:
                out.append(read_element(r))
            except KafkaDecodeError as e:
                e.add_field(f"[{index}]")
                raise
        return out

    def write(w: Writer, value) -> None:
        if value is None:
            w.length(-1, flexible, wide=True)
            return
        w.length(len(value), flexible, wide=True)
        for item in value:
            write_element(w, item)
    return read, write


class _Message(NamedTuple):
    api: Api
    version: int
    flexible: bool
    request: _Struct
    response: _Struct


def _compile_all() -> dict[tuple[int, int], _Message]:
    out = {}
    for api in APIS:
        for version in range(api.versions[0], api.versions[1] + 1):
            flexible = api.flexible_min is not None and version >= api.flexible_min
            out[(api.key, version)] = _Message(api, version, flexible,
                                               _Struct(api.request, version, flexible),
                                               _Struct(api.response, version, flexible))
    return out


_MESSAGES = _compile_all()


def is_flexible(api_key: int, api_version: int) -> bool:
    """Whether a supported API version uses the compact forms and tagged fields."""
    return _MESSAGES[(api_key, api_version)].flexible


def supported_api_keys() -> list[dict]:
    """ApiVersions' ``api_keys``: every API with the versions the broker serves."""
    return [{"api_key": key, "min_version": low, "max_version": high}
            for key, (low, high) in sorted(SUPPORTED_VERSIONS.items())]


def _skip_tags(r: Reader) -> None:
    count = r.unsigned_varint()
    if count * 2 > r.left():
        raise r.fail(f"{count} tagged fields, {r.left()} bytes left")
    for _ in range(count):
        _, size = r.tag_header()
        r.pos += size


def _read_header(r: Reader) -> RequestHeader:
    return RequestHeader(r.int16(), r.int16(), r.int32(), r.string(compact=False, nullable=True))


def decode_request(frame: bytes | bytearray | memoryview) -> tuple[RequestHeader, dict]:
    """One request (without its 4-byte size) -> its header and body."""
    r = Reader(frame)
    try:
        header = _read_header(r)
    except KafkaDecodeError as e:
        e.context = "request header"
        raise
    message = _MESSAGES.get((header.api_key, header.api_version))
    if message is None:
        raise _unsupported(header, r)
    context = f"{message.api.name} v{header.api_version} request"
    try:
        if message.flexible:
            _skip_tags(r)
        body = message.request.decode(r)     # bytes left over are ignored (see above)
    except KafkaDecodeError as e:
        e.context = context
        raise
    return header, body


def _unsupported(header: RequestHeader, r: Reader) -> KafkaUnsupportedVersionError:
    api = _API_BY_KEY.get(header.api_key)
    if api is None:
        reason = f"unknown API key {header.api_key} (version {header.api_version})"
    else:
        reason = (f"{api.name} version {header.api_version} is not supported "
                  f"(versions {api.versions[0]}-{api.versions[1]})")
    return KafkaUnsupportedVersionError(reason, 0, r.end, header)


def encode_response(header: RequestHeader, body: dict) -> list[bytes | bytearray | memoryview]:
    """The whole response frame, size first, for the request ``header`` names.

    The caller answers an unsupported ApiVersions request with
    ``header._replace(api_version=0)`` and error_code UNSUPPORTED_VERSION."""
    message = _MESSAGES[(header.api_key, header.api_version)]
    w = Writer()
    w.buf += _SIZE_PLACEHOLDER
    w.int32(header.correlation_id)
    if message.flexible and header.api_key != API_VERSIONS_KEY:
        w.unsigned_varint(0)             # response header v1: no tagged fields
    message.response.encode(w, body)
    return _framed(w)


def encode_request(header: RequestHeader, body: dict) -> list[bytes | bytearray | memoryview]:
    """The whole request frame, size first (a client's side; the tests use it)."""
    message = _MESSAGES[(header.api_key, header.api_version)]
    w = Writer()
    w.buf += _SIZE_PLACEHOLDER
    w.int16(header.api_key)
    w.int16(header.api_version)
    w.int32(header.correlation_id)
    w.string(header.client_id, compact=False)
    if message.flexible:
        w.unsigned_varint(0)
    message.request.encode(w, body)
    return _framed(w)


def _framed(w: Writer) -> list[bytes | bytearray | memoryview]:
    chunks = w.finish()
    size = sum(c.nbytes if isinstance(c, memoryview) else len(c) for c in chunks) - _SIZE.size
    _SIZE.pack_into(chunks[0], 0, size)
    return chunks


def decode_response(api_key: int, api_version: int,
                    frame: bytes | bytearray | memoryview) -> tuple[int, dict]:
    """One response (without its 4-byte size) -> (correlation_id, body)."""
    message = _MESSAGES[(api_key, api_version)]
    r = Reader(frame)
    try:
        correlation_id = r.int32()
        if message.flexible and api_key != API_VERSIONS_KEY:
            _skip_tags(r)
        body = message.response.decode(r)
        if r.left():
            raise r.fail(f"{r.left()} bytes left over after the last field")
    except KafkaDecodeError as e:
        e.context = f"{message.api.name} v{api_version} response"
        raise
    return correlation_id, body
