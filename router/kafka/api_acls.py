"""DescribeAcls, CreateAcls and DeleteAcls: Plinth's ACL file as Kafka's ACL bindings.

Runs on the Kafka listener's event loop thread (gateway.py). Plinth's ACLs are
the router's ``--acl`` file (router/acl.py), loaded at start; the Kafka
listener reads them, it never changes them.

DescribeAcls describes each grant of the file as Kafka's bindings, all ALLOW,
host ``*``, principal ``User:<name>`` (a CurveZMQ key's entry as
``User:<its Z85 key>``, the ``"*"`` entry as Kafka's wildcard ``User:*``):

    Plinth operation   resource (pattern)   Kafka operations
    produce            TOPIC (topics)       WRITE
    consume            TOPIC (topics)       READ
                       GROUP (groups)       READ
    admin              TOPIC (topics)       CREATE, DELETE, ALTER, DESCRIBE,
                                            ALTER_CONFIGS, DESCRIBE_CONFIGS
                       GROUP (groups)       DESCRIBE, DELETE
    cluster            CLUSTER kafka-cluster  DESCRIBE, ALTER

A pattern without wildcards is LITERAL; ``*`` alone is LITERAL ``*`` (Kafka's
wildcard resource); ``prefix*`` is PREFIXED ``prefix``. Any other shell
pattern (``?``, ``[...]``, a ``*`` inside) has no Kafka equivalent: it is
described as it is written, with pattern type UNKNOWN (0), so that nothing
granted is hidden (only an ANY pattern filter shows it). The request's filter
is Kafka's AclBindingFilter, MATCH included; a filter field Kafka calls
UNKNOWN (or a number no Kafka enum has) is INVALID_REQUEST, as in Kafka.

Who may describe: as Kafka asks DESCRIBE on the cluster, a user whose grants
hold Plinth's ``cluster`` operation; others get CLUSTER_AUTHORIZATION_FAILED.
Without an ACL file every ACL API answers SECURITY_DISABLED (54), as Kafka
does with no authorizer. (librdkafka, so confluent-kafka, drops DescribeAcls'
top-level error code and shows either refusal as an empty list, as it does
Kafka's; kafka-python raises it with its message.)

CreateAcls and DeleteAcls are refused, each binding or filter, with
CLUSTER_AUTHORIZATION_FAILED (31) and a message naming the file: changing the
file (and restarting) is the only way to change Plinth's ACLs. Why that code:
Kafka answers a CreateAcls or DeleteAcls with CLUSTER_AUTHORIZATION_FAILED
when the principal lacks ALTER on the cluster, and through this listener no
principal holds it; kafka-acls and the AdminClients show it as an
authorization error, not retried. SECURITY_DISABLED would say there are no
ACLs while the file's are enforced, and INVALID_REQUEST reads as a client bug.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from plinth.router.acl import PRINCIPAL_PREFIX, Acl, Grant
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.backend import PRINCIPAL

log = logging.getLogger(__name__)

# Kafka's ResourceType, PatternType, AclOperation and AclPermissionType numbers.
RESOURCE_ANY, RESOURCE_TOPIC, RESOURCE_GROUP, RESOURCE_CLUSTER = 1, 2, 3, 4
RESOURCE_TYPE_MAX = 7                           # USER
PATTERN_UNKNOWN, PATTERN_ANY, PATTERN_MATCH, PATTERN_LITERAL, PATTERN_PREFIXED = 0, 1, 2, 3, 4
OP_ANY, OP_READ, OP_WRITE, OP_CREATE, OP_DELETE, OP_ALTER, OP_DESCRIBE = 1, 3, 4, 5, 6, 7, 8
OP_DESCRIBE_CONFIGS, OP_ALTER_CONFIGS = 10, 11
OPERATION_MAX = 14                              # DESCRIBE_TOKENS
PERMISSION_ANY, PERMISSION_ALLOW = 1, 3
PERMISSION_MAX = 3
CLUSTER_NAME = "kafka-cluster"                  # Kafka's one cluster resource name
HOST_ANY = "*"
_GLOB_CHARS = frozenset("*?[")

# Plinth operation -> ((Kafka resource type, Grant field of its pattern, Kafka operations)).
_KAFKA_OPERATIONS = {
    "produce": ((RESOURCE_TOPIC, "topics", (OP_WRITE,)),),
    "consume": ((RESOURCE_TOPIC, "topics", (OP_READ,)), (RESOURCE_GROUP, "groups", (OP_READ,))),
    "admin": ((RESOURCE_TOPIC, "topics", (OP_CREATE, OP_DELETE, OP_ALTER, OP_DESCRIBE,
                                          OP_ALTER_CONFIGS, OP_DESCRIBE_CONFIGS)),
              (RESOURCE_GROUP, "groups", (OP_DESCRIBE, OP_DELETE))),
    "cluster": ((RESOURCE_CLUSTER, None, (OP_DESCRIBE, OP_ALTER)),),
}


class Binding(NamedTuple):
    """One Kafka ACL binding: a resource pattern and an access control entry."""

    resource_type: int
    resource_name: str
    pattern_type: int
    principal: str
    host: str
    operation: int
    permission_type: int


def kafka_pattern(glob: str) -> tuple[str, int]:
    """A shell pattern of the ACL file as Kafka's (name, pattern type)."""
    if glob == "*" or not _GLOB_CHARS & set(glob):
        return glob, PATTERN_LITERAL
    if glob.endswith("*") and not _GLOB_CHARS & set(glob[:-1]):
        return glob[:-1], PATTERN_PREFIXED
    return glob, PATTERN_UNKNOWN


def principal_of(key: str) -> str:
    """How Kafka names the ACL file's key: ``User:<name>``."""
    return key if key.startswith(PRINCIPAL_PREFIX) else f"{PRINCIPAL_PREFIX}{key}"


def bindings_of(acl: Acl) -> list[Binding]:
    """Every binding the file's grants make, once each, in the file's order."""
    out: dict[Binding, None] = {}
    for key, grants in acl.entries().items():
        for grant in grants:
            for binding in _grant_bindings(principal_of(key), grant):
                out.setdefault(binding)
    return list(out)


def _grant_bindings(principal: str, grant: Grant) -> list[Binding]:
    out = []
    for operation in sorted(grant.operations):
        for resource_type, field, kafka_operations in _KAFKA_OPERATIONS[operation]:
            if field is None:
                name, pattern = CLUSTER_NAME, PATTERN_LITERAL
            elif getattr(grant, field) is None:
                continue
            else:
                name, pattern = kafka_pattern(getattr(grant, field))
            out.extend(Binding(resource_type, name, pattern, principal, HOST_ANY, op,
                               PERMISSION_ALLOW) for op in kafka_operations)
    return out


def filter_error(f: dict) -> str | None:
    """Why a request's AclBindingFilter is invalid (Kafka: INVALID_REQUEST), or None."""
    checks = (("resource type", f["resource_type_filter"], RESOURCE_TYPE_MAX),
              ("pattern type", f["pattern_type_filter"], PATTERN_PREFIXED),
              ("operation", f["operation"], OPERATION_MAX),
              ("permission type", f["permission_type"], PERMISSION_MAX))
    for what, value, highest in checks:
        if not 1 <= value <= highest:
            return (f"ACL filter {what} {value} is UNKNOWN or not one of Kafka's "
                    f"(1..{highest})")
    return None


def matches(f: dict, b: Binding) -> bool:
    """Kafka's AclBindingFilter.matches: the filter (already valid) holds for ``b``."""
    return (f["resource_type_filter"] in (RESOURCE_ANY, b.resource_type)
            and _pattern_matches(f["resource_name_filter"], f["pattern_type_filter"], b)
            and f["principal_filter"] in (None, b.principal)
            and f["host_filter"] in (None, b.host)
            and f["operation"] in (OP_ANY, b.operation)
            and f["permission_type"] in (PERMISSION_ANY, b.permission_type))


def _pattern_matches(name: str | None, pattern: int, b: Binding) -> bool:
    if pattern == PATTERN_MATCH:
        if name is None:
            return True
        if b.pattern_type == PATTERN_LITERAL:
            return b.resource_name in (name, "*")
        return b.pattern_type == PATTERN_PREFIXED and name.startswith(b.resource_name)
    if pattern != PATTERN_ANY and pattern != b.pattern_type:
        return False
    return name is None or name == b.resource_name


def _no_acl_file_message() -> str:
    return ("this broker has no ACL file: Plinth's ACLs come from `plinth serve --acl FILE` "
            "(beside --curve-secret-key and --kafka-sasl-users), not from Kafka's ACL APIs")


def _read_only_message(acl: Acl) -> str:
    return (f"Plinth's ACLs are the file {acl.path} (--acl) and cannot be changed through "
            f"Kafka's ACL APIs: edit the file and restart the broker")


def cluster_refusal(acl: Acl | None, doing: str) -> str | None:
    """Why this request's user may not do ``doing`` (Kafka's DESCRIBE on the cluster:
    "describe the ACLs"), naming it and the grant it needs; None if it may: it holds
    the ``cluster`` operation, or there is no ACL file (everyone may do everything).
    Listener thread, in the request's task (it reads backend.PRINCIPAL)."""
    if acl is None:
        return None
    user = PRINCIPAL.get()   # the SASL user's name, which the ACL file keys User:<name>
    if user is not None and acl.grants_for(principal_of(user)).may("cluster"):
        return None
    who = "a client that has not logged in" if user is None else principal_of(user)
    return (f"{who} may not {doing}: it needs a grant of the cluster operation "
            f"in the ACL file {acl.path}")


async def describe_acls(gateway, header, body: dict, connection) -> dict:
    acl = gateway.acl
    answer = {"throttle_time_ms": 0, "error_code": kafka.NONE, "error_message": None,
              "resources": []}
    if acl is None:
        answer["error_code"], answer["error_message"] = (kafka.SECURITY_DISABLED,
                                                         _no_acl_file_message())
        return answer
    refusal = cluster_refusal(acl, "describe the ACLs")
    invalid = filter_error(body)
    if refusal is not None or invalid is not None:
        code = kafka.CLUSTER_AUTHORIZATION_FAILED if refusal else kafka.INVALID_REQUEST
        answer["error_code"], answer["error_message"] = code, refusal or invalid
        return answer
    answer["resources"] = _by_resource([b for b in bindings_of(acl) if matches(body, b)])
    return answer


def _by_resource(found: list[Binding]) -> list[dict]:
    """DescribeAcls' resources: the bindings grouped by resource pattern, in order."""
    resources: dict[tuple[int, str, int], list[dict]] = {}
    for b in found:
        resources.setdefault((b.resource_type, b.resource_name, b.pattern_type), []).append(
            {"principal": b.principal, "host": b.host, "operation": b.operation,
             "permission_type": b.permission_type})
    return [{"resource_type": kind, "resource_name": name, "pattern_type": pattern,
             "acls": acls} for (kind, name, pattern), acls in resources.items()]


async def create_acls(gateway, header, body: dict, connection) -> dict:
    acl = gateway.acl
    code, message = ((kafka.SECURITY_DISABLED, _no_acl_file_message()) if acl is None
                     else (kafka.CLUSTER_AUTHORIZATION_FAILED, _read_only_message(acl)))
    creations = body["creations"]
    if creations:
        log.info("Kafka CreateAcls of %d bindings from %s refused: %s", len(creations),
                 header.client_id, message)
    return {"throttle_time_ms": 0, "results": [{"error_code": code, "error_message": message}
                                               for _ in creations]}


async def delete_acls(gateway, header, body: dict, connection) -> dict:
    acl = gateway.acl
    results = []
    for f in body["filters"]:
        invalid = None if acl is None else filter_error(f)
        code, message = ((kafka.SECURITY_DISABLED, _no_acl_file_message()) if acl is None
                         else (kafka.INVALID_REQUEST, invalid) if invalid is not None
                         else (kafka.CLUSTER_AUTHORIZATION_FAILED, _read_only_message(acl)))
        results.append({"error_code": code, "error_message": message, "matching_acls": []})
    if results:
        log.info("Kafka DeleteAcls of %d filters from %s refused", len(results),
                 header.client_id)
    return {"throttle_time_ms": 0, "filter_results": results}
