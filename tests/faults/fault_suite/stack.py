"""The service under test in one scenario."""

import os
import threading
import time

import requests

from .common import (ADMIN_KEY, GROUP, LEASE_SECS, RECONCILE_GRACE_SECS, RECONCILE_INTERVAL_SECS,
                     SHUTDOWN_TIMEOUT_SECS, TEAM_CREDITS, TEAMS, free_port)
from .processes import EXE, Proc, wait_http


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
