"""Address facts shared by every server and client keydesk runs (pure, no I/O)."""

from __future__ import annotations

import ipaddress

# Names that resolve to loopback on every sane system. Anything else is judged by its address.
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the name ``localhost``: plain (unencrypted) traffic is allowed
    only there, because nothing else on the network can read it."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
