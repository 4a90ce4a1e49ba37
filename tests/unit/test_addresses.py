"""Private-network detection for the ml-commons connector (resolved, not by prefix)."""

from __future__ import annotations

import socket

import pytest

from bridge.clients.addresses import host_is_private


@pytest.mark.parametrize(
    ("url", "private"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://localhost:8000", True),
        ("http://[::1]:8000", True),
        ("http://10.1.2.3:8000", True),
        ("http://172.16.0.5", True),
        ("http://172.31.255.1", True),
        ("http://172.32.0.1", False),  # outside 172.16/12: a prefix test called it private
        ("http://172.15.0.1", False),
        ("http://192.168.1.10:8000", True),
        ("http://169.254.10.1", True),  # link-local
        ("http://[fd12:3456::1]:8000", True),  # IPv6 unique local
        ("http://[fe80::1]", True),
        ("http://[::ffff:10.0.0.1]", True),  # IPv4-mapped
        ("http://8.8.8.8", False),
        ("https://[2001:4860:4860::8888]", False),
    ],
)
def test_addresses(url, private):
    assert host_is_private(url)[0] is private


def test_a_name_is_judged_by_what_it_resolves_to(monkeypatch):
    answers = {
        "bridge": [(socket.AF_INET, 1, 6, "", ("172.18.0.4", 0))],
        "api.example.org": [(socket.AF_INET, 1, 6, "", ("93.184.216.34", 0))],
    }

    def resolve(host, *args, **kwargs):
        if host not in answers:
            raise socket.gaierror("unknown")
        return answers[host]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    assert host_is_private("http://bridge:8000") == (True, "bridge resolves to 172.18.0.4")
    assert host_is_private("http://api.example.org")[0] is False
    private, why = host_is_private("http://bridge.svc.cluster.local:8000")
    assert private and "does not resolve here" in why
