"""The client load every scenario drives."""

import threading
import time

import requests

from .common import GROUP, TEAMS


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
