"""Loopback helpers shared by the end-to-end tests and the benchmarks."""
from __future__ import annotations

import socket

import requests
import requests.adapters

HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """Return `count` distinct loopback ports that were free a moment ago."""
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind((HOST, 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def new_http(pool: int = 10) -> requests.Session:
    """Return a requests session for loopback addresses: no proxy, `pool` kept connections."""
    http = requests.Session()
    http.trust_env = False
    adapter = requests.adapters.HTTPAdapter(pool_connections=pool, pool_maxsize=pool)
    http.mount("http://", adapter)
    return http
