#!/usr/bin/env python3
"""Fault-tolerance suite: real processes, real faults, invariants checked from PostgreSQL.

Starts a private PostgreSQL (initdb + pg_ctl in a temporary directory, spare loopback port, trust
auth) and a private redis-server (spare port, no persistence), then per scenario: fake-llm,
saasllm-api with in-process workers turned off, and separate saasllm-worker processes. It drives
jobs with asynchronous calls from a few client threads, injects a fault (kill -9, Redis or
PostgreSQL restart, SIGTERM, scale-out, crash points inside the worker, overload), completes the
jobs, waits for the queue to drain and checks the ledger and call invariants in SQL.

Usage: scripts/faults [--list] [--keep] [scenario ...]     (default: every scenario)
See docs/FAULTS.md.

The suite lives in the fault_suite package beside this file, one module per concern:
  common.py              settings (lease times, teams, paths) and small helpers
  processes.py           child processes and the suite's own names for the binaries
  cluster.py             the private PostgreSQL and Redis
  stack.py               the service under test in one scenario (fake-llm, API, workers)
  load.py                the client threads driving jobs and asynchronous calls
  observations.py        the drain, the upstream's request log, the workers' log lines
  invariants.py          the ledger, job, call, client and upstream checks every scenario ends with
  scenarios_workers.py   kill -9, SIGTERM, scale-out and crash points of workers
  scenarios_services.py  Redis and PostgreSQL restarts
  scenarios_overload.py  ten times more submissions than the workers serve
  scenarios_budget.py    kill -9 of one of two API processes sharing a small budget
  cli.py                 choosing and running scenarios, the summary
"""

import sys

from fault_suite.cli import main

if __name__ == "__main__":
    sys.exit(main())
