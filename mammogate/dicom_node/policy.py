"""Who may associate with the SCP: the called AE titles it answers to, and the calling AE titles
(peers) it accepts, each from any host or from the hosts listed for it.

The policy is decided before pynetdicom's own checks (which the SCP switches off), so every
rejection carries a reason a person can act on: it goes to the log, the audit log and the
association history; the peer receives the standard A-ASSOCIATE-RJ diagnostic.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A-ASSOCIATE-RJ: rejected-permanent (1), by the service user (1), and the diagnostic
CALLING_AE_NOT_RECOGNISED = 0x03
CALLED_AE_NOT_RECOGNISED = 0x07


@dataclass(frozen=True)
class Refusal:
    reason: str
    diagnostic: int


@dataclass(frozen=True)
class PeerRule:
    """A calling AE title and where it may call from (no hosts: anywhere)."""

    ae_title: str
    hosts: tuple[str, ...] = ()
    networks: tuple[IpNetwork, ...] = ()

    def admits(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        if not self.hosts:
            return True
        return address is not None and any(address in net for net in self.networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def resolve_hosts(hosts: Iterable[str]) -> tuple[IpNetwork, ...]:
    """Each host as networks: an address or CIDR network as written, a host name by its
    addresses now (a name that does not resolve admits nothing, and is logged)."""
    networks: list[IpNetwork] = []
    for host in hosts:
        try:
            networks.append(ipaddress.ip_network(host, strict=False))
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError as exc:
            log.warning("peer host %s does not resolve (%s): no association from it is accepted",
                        host, exc.strerror or exc)
            continue
        for info in infos:
            address = _address(str(info[4][0]))
            if address is not None:
                networks.append(ipaddress.ip_network(address))
    return tuple(dict.fromkeys(networks))


def peer_rule(ae_title: str, hosts_text: str) -> PeerRule:
    """A peer as stored: ``hosts_text`` comma-separated, empty for any host."""
    hosts = tuple(h.strip() for h in hosts_text.split(",") if h.strip())
    return PeerRule(ae_title, hosts, resolve_hosts(hosts))


@dataclass(frozen=True)
class AssociationPolicy:
    """Which associations the SCP accepts. With no peers, any calling AE title is accepted
    (the node refuses to start that way unless it listens on loopback only or
    ``dicom.accept_any_calling_ae`` is set)."""

    listening: tuple[str, ...]
    peers: dict[str, PeerRule] = field(default_factory=dict)

    @classmethod
    def build(cls, listening: Sequence[str], peers: Iterable[PeerRule]) -> AssociationPolicy:
        return cls(tuple(listening), {p.ae_title: p for p in peers})

    @property
    def accepts_any_caller(self) -> bool:
        return not self.peers

    def verdict(self, calling: str, called: str, host: str) -> Refusal | None:
        """None to accept, else why not."""
        calling, called = calling.strip(), called.strip()
        if called not in self.listening:
            return Refusal(
                f"called AE title {called!r} is not one of this node's "
                f"({', '.join(self.listening)}; dicom.ae_title, dicom.additional_ae_titles)",
                CALLED_AE_NOT_RECOGNISED,
            )
        if not self.peers:
            return None
        peer = self.peers.get(calling)
        if peer is None:
            return Refusal(
                f"calling AE title {calling!r} is not an allowed peer (dicom.peers, "
                "dicom.allowed_calling_ae_titles; `mammogate config apply` after editing)",
                CALLING_AE_NOT_RECOGNISED,
            )
        if not peer.admits(_address(host)):
            return Refusal(
                f"calling AE title {calling!r} is allowed from {', '.join(peer.hosts)} only, "
                f"not from {host}",
                CALLING_AE_NOT_RECOGNISED,
            )
        return None
