"""Which network addresses a webhook step may reach. Pure: the standard library's ``ipaddress`` only.

By default a webhook may only reach public addresses: not loopback, private, link-local, multicast, unspecified,
reserved or shared (CGNAT) ones, nor a cloud's metadata service, nor any of those inside an IPv6 address (IPv4-
mapped, NAT64, 6to4). A deployment that needs internal hooks names them (``WEBHOOK_ALLOWED_HOSTS``: host names,
addresses, networks). The check is made on save where a step's host is literal (an address or ``localhost``) and
on every connection the call makes (``workflow_engine.webhooks``).
"""

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for, if any (IPv4-mapped, NAT64, 6to4)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if any(address in net for net in NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def refusal(address: Address) -> str | None:
    """Why a webhook may not reach ``address`` by default ("a loopback address"...), or None when it may."""
    if address in METADATA:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded(address)
        if inner is not None:
            return refusal(inner)  # what a connection to it reaches
    checks = (
        (address.is_loopback, "a loopback address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in SHARED, "a shared (carrier-grade NAT) address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for hit, reason in checks if hit), None)


def parse_address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """The internal destinations a deployment opens to webhooks: host names (reached wherever they resolve),
    and addresses or networks."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def allowing(cls, entries: Iterable[str]) -> "AddressPolicy":
        """From a list of host names, addresses and CIDR networks; raises ValueError for a malformed network."""
        hosts: set[str] = set()
        networks: list[Network] = []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            if "/" in entry or parse_address(entry) is not None:
                networks.append(ipaddress.ip_network(entry, strict=False))
            else:
                hosts.add(_host_name(entry))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return _host_name(host) in self.hosts

    def refusal(self, address: Address) -> str | None:
        """Why a webhook may not connect to ``address`` under this policy, or None."""
        plain = address
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            plain = address.ipv4_mapped
        if any(plain in net or address in net for net in self.networks):
            return None
        return refusal(address)

    def url_refusal(self, url: str) -> str | None:
        """What can be told from the URL alone (its host is an address or ``localhost``): why a webhook may not call
        it, or None. Names are checked when the call resolves them."""
        try:
            host = urlsplit(url).hostname
        except ValueError:
            return "is not a valid URL"
        if not host:
            return "has no host"
        if self.allows_host(host):
            return None
        name = _host_name(host)
        if name == "localhost" or name.endswith(".localhost"):
            return f"host {host!r} is a loopback address"
        address = parse_address(host)
        if address is None:
            return None
        reason = self.refusal(address)
        return None if reason is None else f"host {host} is {reason}"


def _host_name(host: str) -> str:
    return host.strip().rstrip(".").lower()


DEFAULT_POLICY = AddressPolicy()
