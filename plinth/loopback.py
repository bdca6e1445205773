"""Whether a host names this machine's loopback interface.

One answer for every listener that treats loopback specially: the router's
client socket and the Kafka listener refuse plaintext beyond loopback, and a
shard offers its direct socket only on loopback. Any process may call it.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for "localhost", 127.0.0.0/8 and ::1 (bracketed or not); False for every other
    host, the wildcards ("0.0.0.0", "*", "::", "") included: they bind beyond loopback."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
