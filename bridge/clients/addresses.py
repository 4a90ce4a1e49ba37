"""Whether a URL's host is on a private network, as ml-commons judges it.

OpenSearch's ml-commons refuses connectors to private addresses unless
``plugins.ml_commons.connector.private_ip_enabled`` is set; the bridge decides that from
the addresses the host name resolves to (``ipaddress``), never from the text of the name.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def _is_private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_private or address.is_loopback or address.is_link_local


def host_is_private(url: str) -> tuple[bool, str]:
    """(private?, why) for the host of ``url``: True when it is, or resolves to, a
    loopback, private (RFC 1918, IPv6 ULA), or link-local address. A name that does not
    resolve here (``bridge`` inside Docker Compose, a cluster-internal DNS name) counts as
    private: such names are only reachable from inside a private network."""
    host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    try:
        return _is_private(ipaddress.ip_address(host)), f"{host} is an IP address"
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return True, f"{host} does not resolve here: taken as an internal name"
    addresses = {ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos}
    private = any(_is_private(a) for a in addresses)
    shown = ", ".join(sorted(map(str, addresses)))
    return private, f"{host} resolves to {shown}"
