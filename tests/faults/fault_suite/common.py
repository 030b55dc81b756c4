"""Settings and small helpers every part of the suite uses."""

import os
import socket
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("FAULTS_BIN_DIR", ROOT / "target" / "debug"))
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
ADMIN_KEY = "faults-admin-key"
GROUP = "FaultAgent"
TEAMS = ("team_faults_a", "team_faults_b")
TEAM_CREDITS = 1_000_000

# Short lease settings, so that a dead worker's calls come back within seconds.
LEASE_SECS = 3  # the worker's minimum
RECONCILE_INTERVAL_SECS = 1
RECONCILE_GRACE_SECS = 3
SHUTDOWN_TIMEOUT_SECS = 10
# Bound on "a fault heals": a lease runs out, the reconciler notices, a worker runs the call.
HEAL_BOUND_SECS = LEASE_SECS + RECONCILE_INTERVAL_SECS + RECONCILE_GRACE_SECS + 8

# The suite's start: log lines and the summary count from it.
T0 = time.time()


def say(message):
    print(f"[{time.time() - T0:7.1f}s] {message}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
