"""Which IP addresses a fetch on a job's behalf may reach: a classifier and the refusal rule.

Every address falls in one :class:`AddressClass`. Only ``PUBLIC`` is fetched by default;
``allow_private`` (the setting ``INPUT_URL_ALLOW_PRIVATE``) adds loopback, private, link-local
and shared (CGNAT) addresses; multicast, unspecified, reserved and cloud metadata addresses are
never fetched. IPv6 forms that carry an IPv4 address (IPv4-mapped and -compatible, 6to4,
Teredo, NAT64) are judged by that address, so ``::ffff:169.254.169.254`` is the metadata
service. Pure: standard library only, no network.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressClass(enum.StrEnum):
    PUBLIC = "public"
    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link-local"
    SHARED = "shared address space (CGNAT)"
    MULTICAST = "multicast"
    UNSPECIFIED = "unspecified"
    RESERVED = "reserved or special-purpose"
    METADATA = "cloud metadata service"


ALLOWABLE = frozenset(
    {AddressClass.LOOPBACK, AddressClass.PRIVATE, AddressClass.LINK_LOCAL, AddressClass.SHARED}
)
"""The classes ``allow_private`` lets through; the others are refused whatever the setting."""

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OCI, DigitalOcean, OpenStack instance metadata
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "169.254.169.253",  # AWS DNS resolver
        "168.63.129.16",  # Azure wire server (a public address: listed, not classified)
        "100.100.100.200",  # Alibaba Cloud metadata
        "fd00:ec2::254",  # AWS metadata over IPv6
        "fd00:ec2::253",  # AWS DNS resolver over IPv6
    )
)

_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def classify(address: str | IPAddress) -> AddressClass:
    """What kind of address ``address`` is (an IP literal; raises ``ValueError`` otherwise)."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if ip in METADATA_ADDRESSES:
        return AddressClass.METADATA
    if isinstance(ip, ipaddress.IPv6Address):
        carried = _carried_ipv4(ip)
        if carried is not None:
            return classify(carried)
        if ip in _NAT64_LOCAL:
            return AddressClass.RESERVED
    if ip.is_unspecified:
        return AddressClass.UNSPECIFIED
    if ip.is_loopback:
        return AddressClass.LOOPBACK
    if ip.is_multicast:
        return AddressClass.MULTICAST
    if ip.is_link_local:
        return AddressClass.LINK_LOCAL
    if ip in _SHARED:
        return AddressClass.SHARED
    if any(ip in network for network in _PRIVATE_NETWORKS):
        return AddressClass.PRIVATE
    if not ip.is_global or ip.is_reserved:
        return AddressClass.RESERVED
    return AddressClass.PUBLIC


def _carried_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the forms that carry one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address (the server's is public by definition)
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    packed = ip.packed
    if packed[:12] == bytes(12) and int(ip) > 1:  # IPv4-compatible ::a.b.c.d (deprecated)
        return ipaddress.IPv4Address(packed[12:])
    return None


def refusal(
    address: str | IPAddress,
    *,
    allow_private: bool,
    classify: Callable[[str | IPAddress], AddressClass] = classify,
) -> AddressClass | None:
    """The class that makes ``address`` refused, or None when it may be fetched."""
    kind = classify(address)
    if kind is AddressClass.PUBLIC or (allow_private and kind in ALLOWABLE):
        return None
    return kind
