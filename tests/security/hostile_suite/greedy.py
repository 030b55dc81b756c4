"""Slow clients and large unauthenticated bodies against the API's memory."""

import os
import socket
import time

import requests

from .client import BASE, fail


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def check_greedy_clients():
    """Slow clients and large unauthenticated bodies must not grow the API's memory without
    bound: 1,500 connections trickling header lines, then 20 unauthenticated 60 MiB bodies.
    The API must stay under 256 MiB and close the slow connections by itself."""
    pid = os.environ.get("SAASLLM_API_PID")
    if pid:
        print(f"API RSS after the field and query checks: {rss_mib(pid):.1f} MiB")
    host, port = BASE.split("//", 1)[1].split(":")
    slow = []
    for _ in range(1500):
        connection = socket.create_connection((host, int(port)))
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        slow.append(connection)
    peak = rss_mib(pid) if pid else 0.0
    chunk = b"x" * (1024 * 1024)
    for _ in range(20):
        connection = socket.create_connection((host, int(port)))
        connection.sendall(b"POST /api/jobs/create HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k\r\n"
                           b"Content-Type: application/json\r\nContent-Length: 62914560\r\n\r\n")
        try:
            for _ in range(60):
                connection.sendall(chunk)
        except OSError:
            pass  # refused and closed before the body was read: what we want
        connection.close()
        peak = max(peak, rss_mib(pid) if pid else 0.0)
    # Every slow connection is closed by the server within the header deadline (plus slack).
    deadline = time.time() + 120
    open_connections = len(slow)
    for connection in slow:
        connection.settimeout(max(0.1, deadline - time.time()))
        try:
            ended = connection.recv(1) == b""
        except (socket.timeout, OSError) as error:
            ended = not isinstance(error, socket.timeout)
        open_connections -= ended
        connection.close()
    print(f"greedy clients: API peak RSS {peak:.1f} MiB; {open_connections} slow connections left open")
    if pid and peak > 256:
        fail(f"API RSS reached {peak:.1f} MiB under slow clients and large unauthenticated bodies")
    if open_connections:
        fail(f"{open_connections} slow connections were never closed by the server")
    health = requests.get(BASE + "/health", timeout=30)
    if health.status_code != 200:
        fail(f"/health after greedy clients: {health.status_code}")
