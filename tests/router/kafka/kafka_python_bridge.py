"""An independent Kafka codec (kafka-python 3.0.12's protocol module) and random,
realistic message bodies, for the codec's cross-check tests.

kafka-python builds its codec from Kafka's JSON message definitions at import;
ours (router/kafka/messages.py) was written separately, so agreement between the
two is evidence that both read the definitions the same way.
"""

from __future__ import annotations

import random
import string
import uuid

import kafka.protocol.admin as kafka_admin
import kafka.protocol.consumer as kafka_consumer
import kafka.protocol.metadata as kafka_metadata
import kafka.protocol.producer as kafka_producer
import kafka.protocol.sasl as kafka_sasl

from plinth.router.kafka.messages import APIS, NULL, Api, Field, parse_versions

_MODULES = (kafka_admin, kafka_consumer, kafka_metadata, kafka_producer, kafka_sasl)
_INT_BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}
_TEXT = string.ascii_letters + string.digits + "._-é漢"

# Every (api, version) the broker serves: the tests' parameters.
EVERY_API_VERSION = [(api, version) for api in APIS
                for version in range(api.versions[0], api.versions[1] + 1)]


def api_id(param) -> str:
    return f"{param[0].name}-v{param[1]}" if isinstance(param, tuple) else str(param)


def kafka_python_class(api: Api, kind: str):
    """kafka-python's Request or Response class of an API (kind: "Request"/"Response")."""
    for module in _MODULES:
        cls = getattr(module, api.name + kind, None)
        if cls is not None:
            return cls
    raise AssertionError(f"kafka-python has no {api.name}{kind}")


def _in(spec: str, version: int) -> bool:
    low, high = parse_versions(spec)
    return low <= version <= high


def flexible(api: Api, version: int) -> bool:
    return api.flexible_min is not None and version >= api.flexible_min


def random_body(rng: random.Random, fields: tuple[Field, ...], version: int, tagged: bool) -> dict:
    """A body with a realistic, mostly non-default value for every field of the version."""
    return {f.name: random_value(rng, f, version, tagged) for f in fields
            if _in(f.versions, version) and (f.tag is None or tagged)}


def random_value(rng: random.Random, field: Field, version: int, tagged: bool):
    if field.nullable and _in(field.nullable, version) and rng.random() < 0.2:
        return None
    kind = field.type
    if kind == "[]":
        return [random_body(rng, field.fields, version, tagged) for _ in range(rng.randrange(4))]
    if kind == "{}":
        return random_body(rng, field.fields, version, tagged)
    if kind.startswith("[]"):
        element = Field(field.name, kind[2:], field.versions)
        return [random_value(rng, element, version, tagged) for _ in range(rng.randrange(5))]
    if kind in _INT_BITS:
        bits = _INT_BITS[kind]
        return rng.choice([rng.randrange(-(1 << (bits - 1)), 1 << (bits - 1)),
                           rng.randrange(1, 100), -1])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "uuid":
        return uuid.UUID(int=rng.getrandbits(128))
    if kind == "string":
        return "".join(rng.choice(_TEXT) for _ in range(rng.randrange(1, 24)))
    if kind in ("bytes", "records"):
        return rng.randbytes(rng.randrange(0, 64))
    raise AssertionError(f"no random value for type {kind}")


def with_defaults(body: dict, fields: tuple[Field, ...], version: int, tagged: bool) -> dict:
    """``body`` as our codec decodes it: every field, absent ones at their default."""
    out = {}
    for f in fields:
        if f.name in body and _in(f.versions, version) and (f.tag is None or tagged):
            value = body[f.name]
            if f.type == "[]" and value is not None:
                value = [with_defaults(v, f.fields, version, tagged) for v in value]
            elif f.type == "{}" and value is not None:
                value = with_defaults(value, f.fields, version, tagged)
            out[f.name] = value
        else:
            out[f.name] = default_of(f, version, tagged)
    return out


def default_of(field: Field, version: int, tagged: bool):
    if field.default is NULL:
        return None
    if field.default is not None:
        return field.default
    if field.type.startswith("[]"):
        return []
    if field.type == "{}":
        return with_defaults({}, field.fields, version, tagged)
    return {"bool": False, "uuid": uuid.UUID(int=0), "string": "", "bytes": b"",
            "records": None, "float64": 0.0}.get(field.type, 0)


def kafka_python_name(cls, name: str) -> str:
    """kafka-python names Kafka's ClusterAuthorizedOperations and
    TopicAuthorizedOperations plain ``authorized_operations`` (its old names)."""
    if name not in cls.fields and name.endswith("_authorized_operations"):
        return "authorized_operations"
    return name


def to_kafka_python(cls, body: dict, version: int | None = None):
    """kafka-python's object for a body (nested structs built from their classes)."""
    kwargs = {}
    for name, value in body.items():
        name = kafka_python_name(cls, name)
        kafka_field = cls.fields[name]
        if value is not None and kafka_field.is_struct_array():
            value = [to_kafka_python(kafka_field.data_class, v) for v in value]
        elif value is not None and kafka_field.is_struct():
            value = to_kafka_python(kafka_field.data_class, value)
        kwargs[name] = value
    return cls(version=version, **kwargs) if version is not None else cls(**kwargs)


def from_kafka_python(obj, fields: tuple[Field, ...], version: int, tagged: bool) -> dict:
    """A decoded kafka-python object as our codec's dict of the same fields."""
    out = {}
    for f in fields:
        if not _in(f.versions, version) or (f.tag is not None and not tagged):
            continue
        value = getattr(obj, kafka_python_name(type(obj), f.name))
        if f.type == "[]" and value is not None:
            value = [from_kafka_python(v, f.fields, version, tagged) for v in value]
        elif f.type == "{}" and value is not None:
            value = from_kafka_python(value, f.fields, version, tagged)
        if value is None and f.type == "int32":   # kafka-python's "not given" operations
            value = -(1 << 31)
        if isinstance(value, set):    # kafka-python's authorized-operations bit sets
            value = sum(1 << bit for bit in value)
            value = value - (1 << 32) if value >= 1 << 31 else value
        out[f.name] = comparable(value)
    return out


def in_version(body: dict, fields: tuple[Field, ...], version: int, tagged: bool) -> dict:
    """``body`` (all fields, as our codec decodes) cut to the fields on the wire."""
    out = {}
    for f in fields:
        if not _in(f.versions, version) or (f.tag is not None and not tagged):
            continue
        value = body[f.name]
        if f.type == "[]" and value is not None:
            value = [in_version(v, f.fields, version, tagged) for v in value]
        elif f.type == "{}" and value is not None:
            value = in_version(value, f.fields, version, tagged)
        out[f.name] = comparable(value)
    return out


def comparable(value):
    """Values of either codec in one shape: memoryviews as bytes, containers recursed."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, (memoryview, bytearray)):
        return bytes(value)
    return value
