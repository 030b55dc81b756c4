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
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
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

T0 = time.time()

# The suite runs the binaries through symlinks of its own names (faultsuite-api, ...), so that
# someone stopping "saasllm-api" or "redis-server" processes by name on the same machine does not
# stop the suite's, and the suite's are easy to tell apart. Filled in by link_binaries().
EXE = {}


def link_binaries(tmp):
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    redis = shutil.which("redis-server")
    if not redis:
        raise RuntimeError("redis-server is not on PATH")
    for key, target in (("api", BIN / "saasllm-api"), ("worker", BIN / "saasllm-worker"),
                        ("llm", BIN / "fake-llm"), ("redis", Path(redis))):
        link = bin_dir / f"faultsuite-{key}"
        link.symlink_to(target.resolve())
        EXE[key] = link


def say(message):
    print(f"[{time.time() - T0:7.1f}s] {message}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, proc, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return time.time()
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout} s:\n{proc.tail()}")


def percentile(values, p):
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# --------------------------------------------------------------------------------------------
# Processes


class Proc:
    """A child process with its output in a log file. Every one is registered so that cleanup
    (and the shell wrapper's trap, through the pid file) can end it."""

    registry = []
    pid_file = None

    def __init__(self, name, argv, env, log_path):
        self.name = name
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            [str(a) for a in argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the suite, not the children
        )
        self.started = time.time()
        Proc.registry.append(self)
        if Proc.pid_file:
            with open(Proc.pid_file, "a") as f:
                f.write(f"{self.popen.pid}\n")

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout):
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=10):
        if self.alive():
            self.signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.signal(signal.SIGKILL)
                self.wait(5)
        self._log.close()

    def memory(self):
        """VmHWM and VmRSS in MiB (while the process is alive)."""
        values = {}
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    values[key] = int(rest.split()[0]) / 1024
        except OSError:
            pass
        return values

    def tail(self, lines=15):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop_all_processes():
    for proc in reversed(Proc.registry):
        try:
            proc.stop(timeout=5)
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass


# --------------------------------------------------------------------------------------------
# Private PostgreSQL and Redis


class Cluster:
    def __init__(self, tmp):
        self.tmp = tmp
        self.pg_home = tmp / "postgres"
        self.pg_data = self.pg_home / "data"
        self.pg_log = self.pg_home / "postgres.log"
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.redis_dir = tmp / "redis"
        self.redis = None
        # initdb and postgres refuse to run as root.
        self.as_pg_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    # PostgreSQL -------------------------------------------------------------------------
    def start(self):
        self.pg_home.mkdir()
        if self.as_pg_user:
            os.chmod(self.tmp, 0o755)
            shutil.chown(self.pg_home, "postgres", "postgres")
        self._run_pg([PG_BIN / "initdb", "-D", self.pg_data, "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--no-sync"])
        with open(self.pg_data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.pg_port}\n"
                f"unix_socket_directories = '{self.pg_home}'\nmax_connections = 400\n"
                # Durability against the host crashing is not under test; against PostgreSQL
                # crashing it stays intact (the WAL reaches the OS on every commit).
                "fsync = off\nfull_page_writes = off\nshared_buffers = 64MB\n"
                "log_min_messages = warning\n"
            )
        self.pg_ctl("start", "-w", "-t", "60")
        self.redis_dir.mkdir()
        self.start_redis()
        say(f"private PostgreSQL on 127.0.0.1:{self.pg_port}, Redis on 127.0.0.1:{self.redis_port}")

    def _run_pg(self, argv, check=True, timeout=120):
        result = subprocess.run(self.as_pg_user + [str(a) for a in argv], capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stdout}\n{result.stderr}")
        return result

    def pg_ctl(self, *args, check=True):
        return self._run_pg([PG_BIN / "pg_ctl", "-D", self.pg_data, "-l", self.pg_log, *args],
                            check=check)

    def stop_pg(self):
        if (self.pg_data / "postmaster.pid").exists():
            self.pg_ctl("stop", "-m", "immediate", "-w", "-t", "30", check=False)

    def url(self, database):
        return f"postgres://postgres@127.0.0.1:{self.pg_port}/{database}"

    def psql(self, database, sql, timeout=30):
        result = subprocess.run(
            ["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.pg_port), "-U", "postgres", "-d", database, "-c", sql],
            capture_output=True, text=True, timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}\n{sql}")
        return [line.split("\t") for line in result.stdout.splitlines() if line != ""]

    def pg_ready(self):
        try:
            self.psql("postgres", "select 1", timeout=5)
            return True
        except Exception:  # noqa: BLE001
            return False

    # Redis ------------------------------------------------------------------------------
    def start_redis(self):
        self.redis = Proc(
            "redis",
            [EXE["redis"], "--port", self.redis_port, "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.redis_dir, "--protected-mode", "no"],
            os.environ.copy(), self.tmp / "redis.log",
        )
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.redis_ping():
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING")

    def kill_redis(self):
        self.redis.signal(signal.SIGKILL)
        self.redis.wait(10)

    def redis_queue_length(self, namespace):
        """Call ids waiting over all teams' lists of the queue."""
        script = (
            "local t = 0 for _, team in ipairs(redis.call('SMEMBERS', KEYS[1])) do "
            "t = t + redis.call('LLEN', ARGV[1] .. team) end return t"
        )
        args = [b"EVAL", script.encode(), b"1", f"{namespace}:calls:active".encode(),
                f"{namespace}:calls:team:".encode()]
        command = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                s.sendall(command)
                reply = s.recv(64)
                if reply.startswith(b":"):
                    return int(reply[1:].split(b"\r\n")[0])
        except (OSError, ValueError):
            pass
        return None

    def redis_ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def ensure_up(self):
        if not self.pg_ready():
            self.pg_ctl("start", "-w", "-t", "60", check=False)
        if self.redis is None or not self.redis.alive():
            self.start_redis()


# --------------------------------------------------------------------------------------------
# The service under test


class Stack:
    """fake-llm, saasllm-api (EMBEDDED_WORKER=false) and saasllm-worker processes of one scenario,
    with a database and a queue name of their own."""

    def __init__(self, cluster, name, workers=2, concurrency=8, model="slow-500",
                 worker_env=None, supervise=False):
        self.cluster = cluster
        self.name = name
        self.dir = cluster.tmp / name
        self.dir.mkdir()
        self.database = f"faults_{name}"
        self.queue = f"faults-{name}-{os.getpid()}"
        self.initial_workers = workers
        self.concurrency = concurrency
        self.model = model
        self.worker_env = worker_env or {}
        self.supervise = supervise  # restart workers that die (crash-point scenario)
        self.workers = []  # every worker process ever started, in order
        self.worker_seq = 0
        self.upstream_log = self.dir / "upstream.jsonl"
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.llm_port = free_port()
        self.keys = {}
        self.restarts = 0
        self.exits = []  # (worker name, return code) of workers that died on their own

    common_env_extra = {}

    def common_env(self):
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "REDIS_URL", "QUEUE_NAME", "LLM_BASE_URL", "RUST_LOG")}
        env.update({
            "DATABASE_URL": self.cluster.url(self.database),
            "REDIS_URL": f"redis://127.0.0.1:{self.cluster.redis_port}",
            "QUEUE_NAME": self.queue,
            "LLM_BASE_URL": f"http://127.0.0.1:{self.llm_port}",
            "RUST_LOG": "info",
            "LOG_FORMAT": "text",
            "NO_COLOR": "1",
            "CALL_LEASE_SECS": str(LEASE_SECS),
            "RECONCILE_INTERVAL_SECS": str(RECONCILE_INTERVAL_SECS),
            "RECONCILE_GRACE_SECS": str(RECONCILE_GRACE_SECS),
            "SHUTDOWN_TIMEOUT_SECS": str(SHUTDOWN_TIMEOUT_SECS),
            "LLM_TIMEOUT_SECS": "30",
        })
        env.update(self.common_env_extra)
        return env

    def start(self):
        env = os.environ.copy()
        env.update({"FAKE_LLM_ADDR": f"127.0.0.1:{self.llm_port}", "FAKE_LLM_NO_RECORD": "true",
                    "FAKE_LLM_REQUEST_LOG": str(self.upstream_log), "RUST_LOG": "warn"})
        self.fake = Proc("fake-llm", [EXE["llm"]], env, self.dir / "fake-llm.log")
        wait_http(f"http://127.0.0.1:{self.llm_port}/health", self.fake, 30)
        env = self.common_env()
        env.update({"BIND_ADDR": f"127.0.0.1:{self.api_port}", "ADMIN_API_KEY": ADMIN_KEY,
                    "EMBEDDED_WORKER": "false", "COMPLETE_WAIT_SECS": "0",
                    "SYNC_CALL_TIMEOUT_SECS": "30"})
        self.api = Proc("api", [EXE["api"]], env, self.dir / "api.log")
        self.wait_healthy(30)
        self.setup_tenants()
        for _ in range(self.initial_workers):
            self.start_worker()
        self.monitor = threading.Thread(target=self._monitor, daemon=True)
        self.monitor.start()
        time.sleep(0.5)

    def _monitor(self):
        """Samples the Redis queue length and the number of queued calls twice a second: Redis
        should hold about one entry per queued call, not a pile of duplicates."""
        self.queue_samples = []
        self.monitoring = True
        while self.monitoring:
            length = self.cluster.redis_queue_length(self.queue)
            try:
                (queued,), = self.sql("select count(*) from llm_calls where status = 'queued'")
                queued = int(queued)
            except Exception:  # noqa: BLE001 - PostgreSQL may be restarting
                queued = None
            if length is not None and queued is not None:
                self.queue_samples.append((time.time(), length, queued))
            time.sleep(0.5)

    def wait_healthy(self, timeout):
        return wait_http(f"{self.api_url}/health", self.api, timeout)

    def admin(self, path, body):
        r = requests.post(f"{self.api_url}{path}", json=body, headers={"X-Admin-Key": ADMIN_KEY},
                          timeout=10)
        if r.status_code >= 300:
            raise RuntimeError(f"POST {path}: {r.status_code} {r.text}")
        return r.json()

    def setup_tenants(self):
        self.admin("/api/organizations/create", {"organization_id": "org_faults", "name": "Faults"})
        self.admin("/api/model-groups/create", {
            # cost-100: the fake reports a cost header, so no price-table lookup is needed.
            "group_name": GROUP, "models": [{"model_name": f"{self.model}-cost-100", "priority": 0}]})
        for team in TEAMS:
            created = self.admin("/api/teams/create", {
                "organization_id": "org_faults", "team_id": team, "model_groups": [GROUP],
                "credits_allocated": TEAM_CREDITS})
            self.keys[team] = created["virtual_key"]
        # One addition too, so the ledger holds every kind of row the invariant sums.
        self.admin(f"/api/credits/teams/{TEAMS[0]}/add", {"credits_amount": 500, "reason": "faults"})

    def start_worker(self, extra_env=None):
        self.worker_seq += 1
        name = f"w{self.worker_seq}"
        env = self.common_env()
        env.update({"HOSTNAME": name, "WORKER_CONCURRENCY": str(self.concurrency),
                    "DATABASE_MAX_CONNECTIONS": "16"})
        env.update(self.worker_env)
        env.update(extra_env or {})
        proc = Proc(name, [EXE["worker"]], env, self.dir / f"worker-{name}.log")
        self.workers.append(proc)
        return proc

    def live_workers(self):
        return [w for w in self.workers if w.alive()]

    def tick(self):
        """Restarts workers that died by themselves when supervising."""
        if not self.supervise:
            return
        for w in self.workers:
            if not w.alive() and not getattr(w, "handled", False):
                w.handled = True
                self.exits.append((w.name, w.popen.returncode))
                self.restarts += 1
                self.start_worker()

    def sql(self, query):
        return self.cluster.psql(self.database, query)

    def running_on(self, worker):
        return int(self.sql(
            f"select count(*) from llm_calls where status = 'running' and worker_id like '{worker.name}-%'")[0][0])



# --------------------------------------------------------------------------------------------
# Load


class Load:
    """Client threads: create a job, make asynchronous calls in it, complete it; every response
    (or transport error, status 0) is recorded with its start and end time."""

    def __init__(self, stack, threads=3, calls_per_job=4, pause=0.05, calls_per_sec=15):
        self.stack = stack
        self.threads = threads
        self.calls_per_job = calls_per_job
        self.pause = pause
        self.calls_per_sec = calls_per_sec  # overall pacing of submissions, when set
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.records = []  # dict(kind, t0, t1, status, id, job)
        self.jobs = {}  # job_id -> team
        self.completed = {}  # job_id -> last complete response status
        self.complete_bodies = {}  # job_id -> body of a 200 complete
        self.workers = []
        self.started = None
        self.stopped = None
        self.seq = 0

    def start(self):
        self.started = time.time()
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self.workers.append(t)

    def stop(self):
        self.stop_event.set()
        for t in self.workers:
            t.join(30)
        self.stopped = time.time()

    def _headers(self, team):
        return {"Authorization": f"Bearer {self.stack.keys[team]}"}

    def _post(self, session, kind, path, body, team, job=None):
        t0 = time.time()
        status, payload = 0, None
        try:
            r = session.post(f"{self.stack.api_url}{path}", json=body, headers=self._headers(team),
                             timeout=15)
            status = r.status_code
            try:
                payload = r.json()
            except ValueError:
                payload = None
        except requests.RequestException:
            pass
        t1 = time.time()
        record = {"kind": kind, "t0": t0, "t1": t1, "status": status, "job": job, "id": None}
        if kind == "job" and 200 <= status < 300 and payload:
            record["id"] = payload.get("job_id")
        elif kind == "call" and 200 <= status < 300 and payload:
            record["id"] = payload.get("call_id")
        with self.lock:
            self.records.append(record)
        return status, payload

    def _pace(self, thread_start, sent):
        if self.calls_per_sec:
            due = thread_start + sent * self.threads / self.calls_per_sec
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)

    def _run(self, index):
        session = requests.Session()
        team = TEAMS[index % len(TEAMS)]
        thread_start, sent = time.time(), 0
        while not self.stop_event.is_set():
            status, payload = self._post(session, "job", "/api/jobs/create", {
                "team_id": team, "user_id": f"client-{index}", "job_type": "fault_suite"}, team)
            if not (200 <= status < 300 and payload):
                time.sleep(0.1)
                continue
            job = payload["job_id"]
            with self.lock:
                self.jobs[job] = team
            for _ in range(self.calls_per_job):
                if self.stop_event.is_set():
                    break
                self._pace(thread_start, sent)
                sent += 1
                with self.lock:
                    self.seq += 1
                    n = self.seq
                self._post(session, "call", f"/api/jobs/{job}/llm-call", {
                    "model_group": GROUP, "async": True,
                    "messages": [{"role": "user", "content": f"fault suite call {n}"}]}, team, job)
            self.complete(session, job, team)
            if self.pause:
                time.sleep(self.pause)

    def complete(self, session, job, team):
        status, payload = self._post(session, "complete", f"/api/jobs/{job}/complete",
                                     {"status": "completed"}, team, job)
        with self.lock:
            self.completed[job] = status
            if status == 200 and payload:
                self.complete_bodies[job] = payload
        return status

    def finish_jobs(self, timeout=60):
        """Completes every job left open: those whose complete failed during a fault, and jobs
        the client never learnt about (created, but the answer was lost)."""
        session = requests.Session()
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                open_jobs = [j for j, t in self.jobs.items() if self.completed.get(j) not in (200, 202)]
            try:
                rows = self.stack.sql(
                    "select job_id, team_id from jobs where status in ('pending', 'in_progress')")
            except Exception:  # noqa: BLE001 - PostgreSQL may still be coming back
                rows = None
            if rows is not None:
                known = set(open_jobs)
                for job, team in rows:
                    if job not in known:
                        with self.lock:
                            self.jobs.setdefault(job, team)
                        open_jobs.append(job)
            if not open_jobs and rows is not None:
                return
            for job in open_jobs:
                self.complete(session, job, self.jobs[job])
            time.sleep(0.3)
        raise RuntimeError("jobs could not be completed after the load")

    # Figures ---------------------------------------------------------------------------
    def of(self, kind):
        with self.lock:
            return [r for r in self.records if r["kind"] == kind]

    def accepted_calls(self):
        return [r["id"] for r in self.of("call") if 200 <= r["status"] < 300 and r["id"]]


# --------------------------------------------------------------------------------------------
# Draining and invariants


def wait_drained(stack, load, since, timeout):
    """Waits until no call is queued or running and every job is settled; returns seconds from
    `since`, or None on timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        stack.tick()
        try:
            (calls, jobs), = stack.sql(
                "select (select count(*) from llm_calls where status in ('queued', 'running')),"
                " (select count(*) from jobs where status in ('pending', 'in_progress', 'completing'))")
            if int(calls) == 0 and int(jobs) == 0:
                return time.time() - since
        except Exception:  # noqa: BLE001 - PostgreSQL may be restarting
            pass
        time.sleep(0.2)
    return None


def upstream_intervals(stack):
    intervals = defaultdict(list)
    unlabelled = 0
    try:
        lines = stack.upstream_log.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("call_id"):
            intervals[entry["call_id"]].append((entry["start"], entry["end"]))
        else:
            unlabelled += 1
    return intervals, unlabelled


def reconciler_counts(stack):
    """Calls the reconcilers re-pushed as missing from Redis, and re-queued after a lease expired
    (summed from the workers' log lines)."""
    repushed = requeued = 0
    for w in stack.workers:
        try:
            lines = w.log_path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            count = line.rsplit("count=", 1)[-1].split()[0] if "count=" in line else "0"
            if "re-pushed queued calls missing from Redis" in line:
                repushed += int(count)
            elif "re-queued calls whose worker lease expired" in line:
                requeued += int(count)
    return repushed, requeued


def overlapping_executions(intervals):
    """Pairs of upstream requests of the same call that were in flight at the same time."""
    overlaps = []
    for call_id, spans in intervals.items():
        spans = sorted(spans)
        latest_end = None
        for start, end in spans:
            if latest_end is not None and start < latest_end:
                overlaps.append(call_id)
            latest_end = end if latest_end is None else max(latest_end, end)
    return overlaps


class Result:
    def __init__(self, name):
        self.name = name
        self.violations = []
        self.figures = {}
        self.notes = []

    def check(self, condition, message):
        if not condition:
            self.violations.append(message)

    @property
    def passed(self):
        return not self.violations


def check_invariants(stack, load, result):
    """The invariants every scenario ends with, from SQL (plus the client's and upstream's view)."""
    v = result.check

    # Ledger, per team: allocated = allocations + additions, used = deductions, remaining =
    # allocated - used, the balance_after chain, reserved = open holds; the API's view agrees.
    rows = stack.sql("""
        with chain as (
            select team_id, balance_after,
                   sum(case when transaction_type in ('allocation', 'addition') then credits_amount
                            when transaction_type = 'deduction' then -credits_amount else 0 end)
                       over (partition by team_id order by seq) as running
            from credit_transactions)
        select b.team_id, b.credits_allocated, b.credits_used, b.credits_reserved,
          coalesce((select sum(credits_amount) from credit_transactions t where t.team_id = b.team_id
                    and t.transaction_type in ('allocation', 'addition')), 0),
          coalesce((select sum(credits_amount) from credit_transactions t where t.team_id = b.team_id
                    and t.transaction_type = 'deduction'), 0),
          (select count(*) from credit_transactions t where t.team_id = b.team_id
                    and t.transaction_type not in ('allocation', 'addition', 'deduction')),
          (select count(*) from chain c where c.team_id = b.team_id and c.running <> c.balance_after),
          (select count(*) from jobs j where j.team_id = b.team_id and j.credit_hold = 'held')
        from credit_balances b order by b.team_id""")
    for team, allocated, used, reserved, added, deducted, odd, broken, holds in rows:
        allocated, used, reserved, added, deducted = map(int, (allocated, used, reserved, added, deducted))
        v(allocated == added, f"{team}: credits_allocated {allocated} != allocations+additions {added}")
        v(used == deducted, f"{team}: credits_used {used} != deductions {deducted}")
        v(int(odd) == 0, f"{team}: {odd} unexpected ledger rows (refunds?)")
        v(int(broken) == 0, f"{team}: balance_after chain broken in {broken} rows")
        v(reserved == int(holds), f"{team}: credits_reserved {reserved} != open holds {holds}")
        try:
            r = requests.get(f"{stack.api_url}/api/credits/teams/{team}/balance",
                             headers={"Authorization": f"Bearer {stack.keys[team]}"}, timeout=10)
            remaining = r.json().get("credits_remaining")
            v(remaining == added - deducted,
              f"{team}: API credits_remaining {remaining} != additions - deductions {added - deducted}")
        except (requests.RequestException, ValueError) as e:
            v(False, f"{team}: balance endpoint failed: {e}")

    # Jobs: at most one deduction each, exactly one for each job completed successfully, none
    # otherwise; no hold left on a settled job; nothing left unsettled.
    (total, multi, stray, charged_not_one, held_settled, unsettled, uncharged_success,
     charged_failed, charged), = stack.sql("""
        select count(*),
          count(*) filter (where d > 1),
          count(*) filter (where d >= 1 and not (credit_hold = 'charged' and status = 'completed')),
          count(*) filter (where credit_hold = 'charged' and d <> 1),
          count(*) filter (where status in ('completed', 'failed', 'expired') and credit_hold = 'held'),
          count(*) filter (where status in ('pending', 'in_progress', 'completing')),
          count(*) filter (where status = 'completed' and failed_calls = 0 and credit_hold <> 'charged'),
          count(*) filter (where credit_hold = 'charged' and failed_calls > 0),
          count(*) filter (where credit_hold = 'charged')
        from (select j.status, j.credit_hold,
                (select count(*) from credit_transactions t where t.job_id = j.job_id
                   and t.transaction_type = 'deduction') as d,
                (select count(*) from llm_calls c where c.job_id = j.job_id and c.status = 'failed') as failed_calls
              from jobs j) x""")
    double_charges = int(multi) + int(stray) + int(charged_failed)
    v(int(multi) == 0, f"{multi} jobs with more than one deduction")
    v(int(stray) == 0, f"{stray} deductions on jobs that are not completed and charged")
    v(int(charged_failed) == 0, f"{charged_failed} jobs charged although a call failed")
    v(int(charged_not_one) == 0, f"{charged_not_one} charged jobs without exactly one deduction")
    v(int(held_settled) == 0, f"{held_settled} settled jobs still holding a credit")
    v(int(unsettled) == 0, f"{unsettled} jobs never settled")
    v(int(uncharged_success) == 0, f"{uncharged_success} successfully completed jobs not charged")

    # Calls: all terminal; one succeeded attempt per succeeded call (none per failed call);
    # attempts only from the lease token that wrote the result.
    (calls, unfinished, succeeded, failed, bad_success, failed_with_success, multi_token,
     multi_success, token_mismatch, reclaimed, max_latency), = stack.sql("""
        select count(*),
          count(*) filter (where status in ('queued', 'running')),
          count(*) filter (where status = 'succeeded'),
          count(*) filter (where status = 'failed'),
          count(*) filter (where status = 'succeeded' and (succ <> 1 or response_content is null
                                                           or finished_at is null or model_used is null)),
          count(*) filter (where status = 'failed' and succ > 0),
          count(*) filter (where tokens > 1),
          count(*) filter (where succ > 1),
          count(*) filter (where mismatched > 0),
          count(*) filter (where lease_token > 1),
          coalesce(round(max(extract(epoch from finished_at - created_at))::numeric, 2), 0)
        from (select c.status, c.response_content, c.finished_at, c.created_at, c.model_used, c.lease_token,
                (select count(*) from llm_call_attempts a where a.call_id = c.call_id and a.outcome = 'succeeded') as succ,
                (select count(distinct a.lease_token) from llm_call_attempts a where a.call_id = c.call_id) as tokens,
                (select count(*) from llm_call_attempts a where a.call_id = c.call_id
                   and a.lease_token <> c.lease_token) as mismatched
              from llm_calls c) x""")
    v(int(unfinished) == 0, f"{unfinished} calls still queued or running")
    # The fake upstream never fails these models: a failed call means a fault leaked into a result.
    v(int(failed) == 0, f"{failed} calls failed")
    v(int(bad_success) == 0, f"{bad_success} succeeded calls without exactly one successful result")
    v(int(failed_with_success) == 0, f"{failed_with_success} failed calls with a successful attempt")
    v(int(multi_token) == 0, f"{multi_token} calls with attempts recorded under two lease tokens")
    v(int(multi_success) == 0, f"{multi_success} calls with more than one successful attempt")
    v(int(token_mismatch) == 0, f"{token_mismatch} calls with attempts of a stale lease token")

    # The client's view: every 2xx is in the database (nothing acknowledged and then lost).
    db_calls = {r[0]: r[1] for r in stack.sql("select call_id, status from llm_calls")}
    db_jobs = {r[0] for r in stack.sql("select job_id from jobs")}
    accepted = load.accepted_calls()
    missing = [c for c in accepted if c not in db_calls]
    v(not missing, f"{len(missing)} calls acknowledged with 2xx are not in the database: {missing[:3]}")
    accepted_jobs = [r["id"] for r in load.of("job") if 200 <= r["status"] < 300 and r["id"]]
    missing_jobs = [j for j in accepted_jobs if j not in db_jobs]
    v(not missing_jobs, f"{len(missing_jobs)} jobs acknowledged with 2xx are not in the database")
    finished = sum(1 for c in accepted if db_calls.get(c) in ("succeeded", "failed"))
    for job, body in load.complete_bodies.items():
        applied = (body.get("costs") or {}).get("credit_applied")
        if applied is True:
            (hold,), = stack.sql(f"select credit_hold from jobs where job_id = '{job}'")
            v(hold == "charged", f"job {job}: complete answered credit_applied but hold is {hold}")

    # The upstream's view: no call in flight twice at once, and every succeeded call was seen.
    intervals, unlabelled = upstream_intervals(stack)
    overlaps = overlapping_executions(intervals)
    v(not overlaps, f"{len(overlaps)} calls ran concurrently on two workers: {overlaps[:3]}")
    v(unlabelled == 0, f"{unlabelled} upstream requests without the call id header")
    unseen = [c for c, s in db_calls.items() if s == "succeeded" and c not in intervals]
    v(not unseen, f"{len(unseen)} succeeded calls never reached the upstream")
    reexecuted = sum(1 for spans in intervals.values() if len(spans) > 1)

    duplicates = int(multi_token) + int(multi_success) + int(token_mismatch) + len(overlaps)
    repushed, requeued = reconciler_counts(stack)
    result.figures.update({
        "accepted": len(accepted),
        "finished": finished,
        "calls_in_db": int(calls),
        "succeeded": int(succeeded),
        "failed": int(failed),
        "jobs": int(total),
        "charged": int(charged),
        "duplicates": duplicates,
        "double_charges": double_charges,
        "reclaimed": int(reclaimed),
        "reexecuted_upstream": reexecuted,
        "max_call_latency_s": float(max_latency),
        "reconciler_requeued_leases": requeued,
        "reconciler_repushed_lost": repushed,
    })
    v(duplicates == 0, f"duplicates: {duplicates}")
    v(double_charges == 0, f"double charges: {double_charges}")


def finish_scenario(stack, load, result, drain_timeout=90, since=None):
    """Stops the load, completes every job, waits for the queue to drain, checks invariants."""
    if not load.stop_event.is_set():
        load.stop()
    since = since or load.stopped
    load.finish_jobs()
    drain = wait_drained(stack, load, since, drain_timeout)
    stack.monitoring = False
    samples = getattr(stack, "queue_samples", [])
    result.figures["redis_queue_max"] = max((n for _, n, _ in samples), default=0)
    result.figures["queued_calls_max"] = max((q for _, _, q in samples), default=0)
    result.check(drain is not None, f"queue did not drain within {drain_timeout} s")
    result.figures["drain_s"] = round(drain, 1) if drain is not None else None
    calls = load.of("call")
    result.figures["submissions"] = len(calls)
    result.figures["non_2xx"] = sum(1 for r in calls if not 200 <= r["status"] < 300)
    check_invariants(stack, load, result)


# --------------------------------------------------------------------------------------------
# Scenarios


def scenario_kill9(cluster, result):
    """kill -9 a worker at random moments while calls are in flight (upstream slow-500); a
    replacement starts at once. Every call ends within the lease + reconciler bound."""
    stack = Stack(cluster, "kill9", workers=2, concurrency=8, model="slow-500")
    stack.start()
    load = Load(stack, threads=3, calls_per_job=4)
    load.start()
    time.sleep(2)
    kills, in_flight_killed = 0, 0
    end = time.time() + 12
    last_kill = None
    while True:
        victim = random.choice(stack.live_workers())
        in_flight_killed += stack.running_on(victim)
        victim.signal(signal.SIGKILL)
        victim.wait(5)
        last_kill = time.time()
        kills += 1
        stack.start_worker()
        if time.time() >= end:
            break
        time.sleep(random.uniform(0.7, 2.0))
    load.stop()
    result.figures.update({"kills": kills, "calls_running_on_killed": in_flight_killed,
                           "heal_bound_s": HEAL_BOUND_SECS})
    finish_scenario(stack, load, result, since=last_kill)
    drain = result.figures["drain_s"]
    result.check(drain is not None and drain <= HEAL_BOUND_SECS,
                 f"calls took {drain} s after the last kill to finish (bound {HEAL_BOUND_SECS} s)")
    result.check(in_flight_killed > 0, "no call was in flight at any kill (the check proved nothing)")
    return stack


def scenario_redis_restart(cluster, result):
    """Redis killed and restarted empty mid-load: submissions while it is down get 503, and every
    accepted call still finishes (the reconciler re-pushes what Redis lost)."""
    # Fewer slots than the load needs, so that a backlog sits in Redis when it dies.
    stack = Stack(cluster, "redis_restart", workers=2, concurrency=2, model="slow-500")
    stack.start()
    load = Load(stack, threads=3, calls_per_job=4)
    load.start()
    time.sleep(4)
    (queued_before,), = stack.sql("select count(*) from llm_calls where status = 'queued'")
    result.figures["queued_at_kill"] = int(queued_before)
    result.check(int(queued_before) > 0, "nothing was queued when Redis died (the check proved nothing)")
    cluster.kill_redis()
    down = time.time()
    time.sleep(3)
    up = time.time()
    cluster.start_redis()
    say(f"Redis down {up - down:.1f} s ({queued_before} calls queued at the kill)")
    time.sleep(4)
    load.stop()
    during = [r for r in load.of("call") if r["t0"] >= down and r["t1"] <= up]
    ok = sum(1 for r in during if 200 <= r["status"] < 300)
    unavailable = sum(1 for r in during if r["status"] == 503)
    other = len(during) - ok - unavailable
    result.figures.update({"redis_down_s": round(up - down, 1), "during_down": len(during),
                           "during_down_503": unavailable, "during_down_2xx": ok,
                           "during_down_other": other,
                           "during_down_max_ms": round(max(
                               [(r["t1"] - r["t0"]) * 1000 for r in during], default=0))})
    result.check(len(during) > 0, "no submission fell inside the Redis outage")
    result.check(ok == 0, f"{ok} submissions got 2xx while Redis was down")
    result.check(other == 0, f"{other} submissions got neither 2xx nor 503 while Redis was down")
    finish_scenario(stack, load, result)
    return stack


def scenario_pg_restart(cluster, result):
    """PostgreSQL restarted mid-load (pg_ctl restart -m fast, then stop -m immediate + start):
    no 2xx for uncommitted work, API and workers reconnect by themselves, the queue drains."""
    stack = Stack(cluster, "pg_restart", workers=2, concurrency=8, model="slow-500")
    stack.start()
    load = Load(stack, threads=3, calls_per_job=4)
    load.start()
    time.sleep(4)
    t = time.time()
    cluster.pg_ctl("restart", "-m", "fast", "-w", "-t", "60")
    windows = [(t, time.time())]
    say(f"PostgreSQL restarted (-m fast) in {time.time() - t:.1f} s")
    time.sleep(3)
    down = time.time()
    cluster.pg_ctl("stop", "-m", "immediate", "-w", "-t", "60")
    time.sleep(2)
    cluster.pg_ctl("start", "-w", "-t", "60")
    up = time.time()
    windows.append((down, up))
    say(f"PostgreSQL crashed (-m immediate) and back after {up - down:.1f} s")
    healthy = stack.wait_healthy(30)
    result.figures["api_healthy_after_s"] = round(healthy - up, 1)
    time.sleep(4)
    load.stop()
    finish_scenario(stack, load, result)
    restarted = [w.name for w in stack.workers if not w.alive()]
    result.check(stack.api.alive(), "saasllm-api died")
    result.check(not restarted, f"workers died: {restarted}")
    # Requests in flight while PostgreSQL went away or was away, by answer.
    around = [r for r in load.records if any(r["t0"] <= b and r["t1"] >= a for a, b in windows)]
    statuses = defaultdict(int)
    for r in around:
        statuses[f'{r["kind"]}:{r["status"]}'] += 1
    result.figures["requests_across_outages"] = dict(sorted(statuses.items()))
    result.check(around, "no request was in flight during the outages (the check proved nothing)")
    # Workers reconnected by themselves: calls created after the last restart were run.
    (after,), = stack.sql(f"select count(*) from llm_calls where status = 'succeeded'"
                          f" and created_at > to_timestamp({up})")
    result.figures["succeeded_after_restart"] = int(after)
    result.check(int(after) > 0, "no call created after the restart succeeded")
    return stack


def scenario_sigterm(cluster, result):
    """SIGTERM a worker with calls in flight: it takes no new call, finishes its calls within
    SHUTDOWN_TIMEOUT_SECS and exits 0; nothing is lost."""
    stack = Stack(cluster, "sigterm", workers=3, concurrency=8, model="slow-500")
    stack.start()
    load = Load(stack, threads=4, calls_per_job=4)
    load.start()
    time.sleep(4)
    victim, in_flight = None, 0
    for _ in range(50):
        counts = [(stack.running_on(w), w) for w in stack.live_workers()]
        in_flight, victim = max(counts, key=lambda c: c[0])
        if in_flight > 0:
            break
        time.sleep(0.05)
    signalled = time.time()
    victim.signal(signal.SIGTERM)
    code = victim.wait(SHUTDOWN_TIMEOUT_SECS + 10)
    exited = time.time()
    time.sleep(3)
    load.stop()
    result.figures.update({"in_flight_at_sigterm": in_flight, "exit_code": code,
                           "exit_after_s": round(exited - signalled, 2)})
    result.check(in_flight > 0, "the worker had no call in flight at SIGTERM")
    result.check(code == 0, f"worker exit code {code}, expected 0")
    result.check(exited - signalled <= SHUTDOWN_TIMEOUT_SECS + 2,
                 f"worker took {exited - signalled:.1f} s to exit (timeout {SHUTDOWN_TIMEOUT_SECS} s)")
    finish_scenario(stack, load, result)
    (late,), = stack.sql(
        f"select count(*) from llm_calls where worker_id like '{victim.name}-%'"
        f" and started_at > to_timestamp({signalled + 0.5})")
    (finished_by_victim,), = stack.sql(
        f"select count(*) from llm_calls where worker_id like '{victim.name}-%'"
        f" and finished_at >= to_timestamp({signalled})")
    result.figures.update({"claimed_after_sigterm": int(late),
                           "finished_after_sigterm": int(finished_by_victim)})
    result.check(int(late) == 0, f"the worker claimed {late} calls after SIGTERM")
    return stack


def scenario_scale_out(cluster, result):
    """Start a 3rd and a 4th worker mid-load: no call runs on two workers at once (checked at the
    upstream from the x-saasllm-call-id intervals) and the new workers take work."""
    stack = Stack(cluster, "scale_out", workers=2, concurrency=4, model="slow-500")
    stack.start()
    load = Load(stack, threads=4, calls_per_job=5, pause=0)
    load.start()
    time.sleep(3)
    third = stack.start_worker()
    time.sleep(3)
    fourth = stack.start_worker()
    time.sleep(5)
    load.stop()
    finish_scenario(stack, load, result)
    per_worker = dict(stack.sql(
        "select split_part(worker_id, '-', 1), count(*) from llm_calls"
        " where status = 'succeeded' group by 1 order by 1"))
    result.figures["calls_per_worker"] = per_worker
    for w in (third, fourth):
        result.check(int(per_worker.get(w.name, 0)) > 0, f"{w.name} took no call")
    no_spurious_repush(result)
    return stack


def scenario_crash_points(cluster, result):
    """The worker aborts (std::process::abort) at random right after claiming a batch of calls
    (before any starts), between the upstream answer and the group commit of results, and right
    after that commit (SAASLLM_FAULT_CRASH); crashed workers are restarted. Exactly one result
    per call, one charge per job."""
    spec = os.environ.get("FAULTS_CRASH_SPEC",
                          "after_claim:0.1,after_upstream:0.2,after_commit:0.2")
    stack = Stack(cluster, "crash_points", workers=2, concurrency=2, model="slow-500",
                  worker_env={"SAASLLM_FAULT_CRASH": spec}, supervise=True)
    stack.start()
    load = Load(stack, threads=3, calls_per_job=3, pause=0.2)
    load.start()
    end, hard_end = time.time() + 12, time.time() + 25
    while time.time() < hard_end:
        stack.tick()
        points = crash_counts(stack)
        if time.time() >= end and all(points.values()):
            break
        time.sleep(0.1)
    load.stop()
    finish_scenario(stack, load, result)
    points = crash_counts(stack)
    aborted = sum(1 for _, code in stack.exits if code == -signal.SIGABRT)
    result.figures.update({"crash_spec": spec, "crashes": aborted, "restarts": stack.restarts,
                           **{f"crash_{k}": n for k, n in points.items()}})
    for point, n in points.items():
        result.check(n > 0, f"no crash at {point} happened (the check proved nothing)")
    odd = [(n, c) for n, c in stack.exits if c != -signal.SIGABRT]
    result.check(not odd, f"workers exited other than by the crash points: {odd}")
    return stack


def no_spurious_repush(result):
    """Without a fault nothing is lost, so the reconciler must not push any call again (each
    such push is a duplicate entry in Redis)."""
    n = result.figures.get("reconciler_repushed_lost", 0)
    result.check(n == 0, f"the reconciler pushed {n} calls again although none was lost")


def crash_counts(stack):
    counts = {"after_claim": 0, "after_upstream": 0, "after_commit": 0}
    for w in stack.workers:
        try:
            text = w.log_path.read_text(errors="replace")
        except OSError:
            continue
        for point in counts:
            counts[point] += text.count(f"aborting at {point}")
    return counts


def scenario_overload(cluster, result):
    """Ten times more submissions than the workers serve: the API answers /health quickly all
    along, the backlog drains without duplicate queue entries, memory stays bounded."""
    workers, concurrency, upstream_ms = 2, 2, 1000
    capacity = workers * concurrency * 1000 / upstream_ms  # calls per second
    stack = Stack(cluster, "overload", workers=workers, concurrency=concurrency,
                  model=f"slow-{upstream_ms}")
    stack.start()
    latencies, health_errors = [], []
    sampling = threading.Event()

    def sample():
        session = requests.Session()
        while not sampling.is_set():
            t = time.perf_counter()
            try:
                status = session.get(f"{stack.api_url}/health", timeout=5).status_code
                if status != 200:
                    health_errors.append(status)
            except requests.RequestException as e:
                health_errors.append(type(e).__name__)
            latencies.append((time.perf_counter() - t) * 1000)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    load = Load(stack, threads=4, calls_per_job=10, pause=0, calls_per_sec=10 * capacity)
    load.start()
    time.sleep(4)
    load.stop()
    submitted = len(load.of("call"))
    rate = submitted / (load.stopped - load.started)
    say(f"overload: {submitted} submissions at {rate:.0f}/s against a capacity of {capacity:.0f}/s")
    finish_scenario(stack, load, result, drain_timeout=180)
    sampling.set()
    sampler.join(10)
    memory = {"api": stack.api.memory()}
    for w in stack.live_workers():
        memory[w.name] = w.memory()
    submit_ms = [(r["t1"] - r["t0"]) * 1000 for r in load.of("call")]
    result.figures.update({
        "capacity_per_s": capacity, "submit_rate_per_s": round(rate, 1),
        "overload_factor": round(rate / capacity, 1),
        "health_samples": len(latencies),
        "health_p50_ms": round(percentile(latencies, 50), 1),
        "health_p99_ms": round(percentile(latencies, 99), 1),
        "health_max_ms": round(max(latencies, default=0), 1),
        "health_errors": len(health_errors),
        "submit_p99_ms": round(percentile(submit_ms, 99), 1),
        "vm_hwm_mib": {k: round(m.get("VmHWM", 0), 1) for k, m in memory.items()},
    })
    result.check(rate >= 5 * capacity, f"submission rate {rate:.0f}/s is not an overload")
    result.check(percentile(latencies, 99) < 1000 and max(latencies, default=0) < 3000,
                 "/health was slow under load (p99 >= 1 s or max >= 3 s)")
    result.check(not health_errors, f"/health failed under load: {health_errors[:5]}")
    for name, m in memory.items():
        result.check(m.get("VmHWM", 0) < 1024, f"{name} peak RSS {m.get('VmHWM')} MiB >= 1 GiB")
    no_spurious_repush(result)
    return stack


def scenario_api_kill9_budget(cluster, result):
    """kill -9 one of two API processes while both serve /v1 requests of one team on a small
    budget: the recorded spend never passes the budget, the dead process's budget slice comes
    back through the reconciler, and the spend equals the recorded costs."""
    stack = Stack(cluster, "api_kill9_budget", workers=1, concurrency=8, model="slow-200")
    budget_env = {"BUDGET_SLICE_LEASE_SECS": "3", "BUDGET_SLICE_IDLE_SECS": "1"}
    # The first API serves the stack; it is started with the budget settings, then a second one.
    stack.common_env_extra = budget_env
    stack.start()
    team, model, price = "team_faults_budget", "slow-200-cost-5000", 5000
    stack.admin("/api/model-groups/create", {"group_name": "BudgetAgent", "models": [
        {"model_name": model, "config": {"input_cost_per_million": 0, "output_cost_per_million": 50}}]})
    # 10 credits x $0.10 = $1.00: 200 requests of $0.005 (estimated at exactly that).
    key = stack.admin("/api/teams/create", {"organization_id": "org_faults", "team_id": team,
                                            "model_groups": ["BudgetAgent"],
                                            "credits_allocated": 10})["virtual_key"]
    budget = 1_000_000

    def start_second_api():
        env = stack.common_env()
        env.update({"BIND_ADDR": f"127.0.0.1:{second_port}", "ADMIN_API_KEY": ADMIN_KEY,
                    "EMBEDDED_WORKER": "false"})
        proc = Proc("api2", [EXE["api"]], env, stack.dir / f"api2-{time.time():.0f}.log")
        wait_http(f"http://127.0.0.1:{second_port}/health", proc, 30)
        return proc

    second_port = free_port()
    second = start_second_api()
    urls = [stack.api_url, f"http://127.0.0.1:{second_port}"]
    stop = threading.Event()
    answers = defaultdict(int)
    lock = threading.Lock()
    samples = []

    def client(index):
        session = requests.Session()
        url = urls[index % 2] + "/v1/chat/completions"
        body = {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
        while not stop.is_set():
            try:
                status = session.post(url, json=body, timeout=30,
                                      headers={"Authorization": f"Bearer {key}"}).status_code
            except requests.RequestException:
                status = "connection"
                time.sleep(0.05)
            with lock:
                answers[(index % 2, status)] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    end = time.time() + 8
    killed_at = time.time() + 2
    killed = False
    while time.time() < end:
        (spend, reserved), = stack.sql(
            f"select spend_micro_usd, budget_reserved_micro_usd from credit_balances where team_id = '{team}'")
        samples.append(int(spend) + int(reserved))
        if not killed and time.time() >= killed_at:
            second.signal(signal.SIGKILL)
            second.wait(5)
            killed = True
            time.sleep(0.5)
            second = start_second_api()
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join(35)

    # The killed process's slice lapses (3 s lease) and the reconciler returns it; the live
    # processes give theirs back when idle (1 s).
    deadline, settled = time.time() + 20, None
    while time.time() < deadline:
        (reserved, in_slices), = stack.sql(
            f"select budget_reserved_micro_usd, (select count(*) from budget_slices where team_id = '{team}')"
            f" from credit_balances where team_id = '{team}'")
        if int(reserved) == 0 and int(in_slices) == 0:
            settled = True
            break
        time.sleep(0.2)
    (spend, recorded, records), = stack.sql(
        f"select b.spend_micro_usd, coalesce(sum(r.cost_micro_usd), 0), count(r.request_id)"
        f" from credit_balances b left join spend_records r using (team_id)"
        f" where b.team_id = '{team}' group by b.spend_micro_usd")
    spend, recorded, records = int(spend), int(recorded), int(records)
    ok = sum(n for (_, status), n in answers.items() if status == 200)
    server_errors = {f"{api}:{status}": n for (api, status), n in answers.items()
                     if isinstance(status, int) and status >= 500}
    upstream = len([line for line in stack.upstream_log.read_text().splitlines()
                    if model in line]) if stack.upstream_log.exists() else None
    result.figures.update({
        "accepted": ok, "finished": records, "duplicates": 0, "double_charges": 0, "drain_s": None,
        "answers": {f"{api}:{status}": n for (api, status), n in sorted(answers.items(), key=str)},
        "max_spend_plus_reserved": max(samples), "budget": budget, "spend": spend,
        "recorded_costs": recorded, "upstream_requests": upstream,
        "answered_but_unrecorded": ok - records})
    v = result.check
    v(killed, "the second API was never killed")
    v(max(samples) <= budget, f"spend + reserved reached {max(samples)} > budget {budget}")
    v(spend <= budget, f"spend {spend} above the budget {budget}")
    v(spend == recorded, f"spend {spend} != recorded costs {recorded}")
    v(settled, "budget still reserved 20 s after the load (the dead process's slice was not returned)")
    v(not server_errors, f"5xx answers: {server_errors}")
    v(ok >= 150, f"only {ok} requests admitted; the $1.00 budget fits 200 (budget stranded?)")
    # Spend is written in batches after the responses: a process killed with -9 loses the records
    # of what it answered in its last few milliseconds, and its slice (with those estimates) goes
    # back to the team. So answered requests may pass the recorded ones by at most what the killed
    # process's clients (4 threads) had in flight around the kill.
    v(ok <= records + 4, f"{ok} requests answered 200 but only {records} recorded")
    v(records * price <= budget, f"{records} recorded requests of {price} pass the budget {budget}")
    return stack


SCENARIOS = [
    ("kill9", scenario_kill9),
    ("redis_restart", scenario_redis_restart),
    ("pg_restart", scenario_pg_restart),
    ("sigterm", scenario_sigterm),
    ("scale_out", scenario_scale_out),
    ("crash_points", scenario_crash_points),
    ("overload", scenario_overload),
    ("api_kill9_budget", scenario_api_kill9_budget),
]


# --------------------------------------------------------------------------------------------
# Main


def run_scenario(cluster, name, function):
    result = Result(name)
    started = time.time()
    say(f"=== {name}: {function.__doc__.split(chr(10))[0].strip()}")
    stack = None
    try:
        cluster.ensure_up()
        stack = function(cluster, result)
    except Exception as e:  # noqa: BLE001 - one scenario's crash is its failure, not the suite's
        result.violations.append(f"scenario error: {e!r}")
        traceback.print_exc()
    finally:
        if not result.passed:
            for proc in Proc.registry:
                if proc.log_path.parent.name == name and proc.name in ("api",) + tuple(
                        f"w{i}" for i in range(1, 4)):
                    say(f"--- last lines of {proc.log_path}:\n{proc.tail(8)}")
        for proc in Proc.registry:
            if proc.log_path.parent.name == name:
                proc.stop(timeout=SHUTDOWN_TIMEOUT_SECS + 5)
    result.figures["scenario_s"] = round(time.time() - started, 1)
    f = result.figures
    say(f"{name}: {'PASS' if result.passed else 'FAIL'} | calls accepted {f.get('accepted')},"
        f" finished {f.get('finished')}, duplicates {f.get('duplicates')},"
        f" double charges {f.get('double_charges')}, time to drain {f.get('drain_s')} s")
    extra = {k: val for k, val in f.items() if k not in (
        "accepted", "finished", "duplicates", "double_charges", "drain_s")}
    say(f"{name}: {json.dumps(extra)}")
    for violation in result.violations:
        say(f"{name}: VIOLATION {violation}")
    return result


def main():
    parser = argparse.ArgumentParser(description="SaaS LiteLLM fault-tolerance suite")
    parser.add_argument("scenarios", nargs="*", help="scenario names or numbers (default: all)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--json", help="write the figures of every scenario to this file")
    args = parser.parse_args()
    if args.list:
        for i, (name, function) in enumerate(SCENARIOS, 1):
            print(f"{i}. {name}: {' '.join(function.__doc__.split())}")
        return 0
    chosen = []
    for wanted in args.scenarios or [n for n, _ in SCENARIOS]:
        match = [s for i, s in enumerate(SCENARIOS, 1) if wanted in (s[0], str(i))]
        if not match:
            print(f"unknown scenario '{wanted}'; --list shows them", file=sys.stderr)
            return 2
        chosen.append(match[0])
    for binary in ("saasllm-api", "saasllm-worker", "fake-llm"):
        if not (BIN / binary).exists():
            print(f"{BIN / binary} is missing; run cargo build first", file=sys.stderr)
            return 2

    base = os.environ.get("FAULTS_TMPDIR")
    tmp = Path(base) if base else Path(tempfile.mkdtemp(prefix="saasllm-faults-"))
    Proc.pid_file = tmp / "pids"
    cluster = Cluster(tmp)

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    results = []
    try:
        link_binaries(tmp)
        cluster.start()
        for name, function in chosen:
            results.append(run_scenario(cluster, name, function))
    finally:
        stop_all_processes()
        cluster.stop_pg()
        if args.keep:
            say(f"kept {tmp}")
        elif not base:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"{'scenario':<14} {'result':<6} {'accepted':>8} {'finished':>8} {'dupl.':>5} "
          f"{'dbl.chg':>7} {'drain s':>7} {'total s':>7}")
    for r in results:
        f = r.figures
        print(f"{r.name:<14} {'PASS' if r.passed else 'FAIL':<6} {f.get('accepted', '-')!s:>8} "
              f"{f.get('finished', '-')!s:>8} {f.get('duplicates', '-')!s:>5} "
              f"{f.get('double_charges', '-')!s:>7} {f.get('drain_s', '-')!s:>7} {f.get('scenario_s')!s:>7}")
    print(f"total {time.time() - T0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"scenario": r.name, "passed": r.passed, "figures": r.figures,
              "violations": r.violations} for r in results], indent=2))
    failed = [r.name for r in results if not r.passed]
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    print("all scenarios passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
