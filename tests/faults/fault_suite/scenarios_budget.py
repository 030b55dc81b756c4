"""Two API processes sharing a small budget, one killed with -9."""

import signal
import threading
import time
from collections import defaultdict

import requests

from .common import ADMIN_KEY, free_port
from .processes import EXE, Proc, wait_http
from .stack import Stack


TEAM, MODEL, PRICE = "team_faults_budget", "slow-200-cost-5000", 5000
BUDGET = 1_000_000  # micro-USD: the team's 10 credits x $0.10
CLIENT_THREADS = 8  # half of them on each API process


def scenario_api_kill9_budget(cluster, result):
    """kill -9 one of two API processes while both serve /v1 requests of one team on a small
    budget: the recorded spend never passes the budget, the dead process's budget slice comes
    back through the reconciler, and the spend equals the recorded costs."""
    stack = Stack(cluster, "api_kill9_budget", workers=1, concurrency=8, model="slow-200")
    budget_env = {"BUDGET_SLICE_LEASE_SECS": "3", "BUDGET_SLICE_IDLE_SECS": "1"}
    # The first API serves the stack; it is started with the budget settings, then a second one.
    stack.common_env_extra = budget_env
    stack.start()
    key = create_budget_team(stack)
    second = SecondApi(stack)
    clients = Clients([stack.api_url, second.url], key)
    clients.start()
    samples, killed = sample_spend_and_kill(stack, second)
    clients.stop()
    settled = wait_budget_settled(stack)
    check_budget(stack, result, clients.answers, samples, killed, settled)
    return stack


def create_budget_team(stack):
    """A model group of a fixed price and a team on a $1.00 budget; returns the team's key."""
    stack.admin("/api/model-groups/create", {"group_name": "BudgetAgent", "models": [
        {"model_name": MODEL, "config": {"input_cost_per_million": 0, "output_cost_per_million": 50}}]})
    # 10 credits x $0.10 = $1.00: 200 requests of $0.005 (estimated at exactly that).
    return stack.admin("/api/teams/create", {"organization_id": "org_faults", "team_id": TEAM,
                                             "model_groups": ["BudgetAgent"],
                                             "credits_allocated": 10})["virtual_key"]


class SecondApi:
    """A second saasllm-api process on the stack's database, on a port of its own that it keeps
    across restarts."""

    def __init__(self, stack):
        self.stack = stack
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = self.start()

    def start(self):
        env = self.stack.common_env()
        env.update({"BIND_ADDR": f"127.0.0.1:{self.port}", "ADMIN_API_KEY": ADMIN_KEY,
                    "EMBEDDED_WORKER": "false"})
        proc = Proc("api2", [EXE["api"]], env, self.stack.dir / f"api2-{time.time():.0f}.log")
        wait_http(f"{self.url}/health", proc, 30)
        return proc

    def kill9_and_restart(self):
        self.proc.signal(signal.SIGKILL)
        self.proc.wait(5)
        time.sleep(0.5)
        self.proc = self.start()


class Clients:
    """Threads sending chat completions of the budget team, half to each API; counts the
    answers by (API index, status or "connection")."""

    def __init__(self, urls, key):
        self.urls = urls
        self.key = key
        self.stop_event = threading.Event()
        self.answers = defaultdict(int)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(CLIENT_THREADS)]

    def start(self):
        for thread in self.threads:
            thread.start()

    def stop(self):
        self.stop_event.set()
        for thread in self.threads:
            thread.join(35)

    def run(self, index):
        session = requests.Session()
        url = self.urls[index % 2] + "/v1/chat/completions"
        body = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
        while not self.stop_event.is_set():
            try:
                status = session.post(url, json=body, timeout=30,
                                      headers={"Authorization": f"Bearer {self.key}"}).status_code
            except requests.RequestException:
                status = "connection"
                time.sleep(0.05)
            with self.lock:
                self.answers[(index % 2, status)] += 1


def sample_spend_and_kill(stack, second):
    """For 8 s samples spend + reserved ten times a second, killing the second API with -9
    (and starting it again) after 2 s. Returns the samples and whether the kill happened."""
    samples = []
    end = time.time() + 8
    killed_at = time.time() + 2
    killed = False
    while time.time() < end:
        (spend, reserved), = stack.sql(
            f"select spend_micro_usd, budget_reserved_micro_usd from credit_balances where team_id = '{TEAM}'")
        samples.append(int(spend) + int(reserved))
        if not killed and time.time() >= killed_at:
            second.kill9_and_restart()
            killed = True
        time.sleep(0.1)
    return samples, killed


def wait_budget_settled(stack):
    """The killed process's slice lapses (3 s lease) and the reconciler returns it; the live
    processes give theirs back when idle (1 s). True once nothing is reserved, None after 20 s."""
    deadline = time.time() + 20
    while time.time() < deadline:
        (reserved, in_slices), = stack.sql(
            f"select budget_reserved_micro_usd, (select count(*) from budget_slices where team_id = '{TEAM}')"
            f" from credit_balances where team_id = '{TEAM}'")
        if int(reserved) == 0 and int(in_slices) == 0:
            return True
        time.sleep(0.2)
    return None


def check_budget(stack, result, answers, samples, killed, settled):
    """The spend against the budget and the recorded costs, the answers, the slices returned."""
    (spend, recorded, records), = stack.sql(
        f"select b.spend_micro_usd, coalesce(sum(r.cost_micro_usd), 0), count(r.request_id)"
        f" from credit_balances b left join spend_records r using (team_id)"
        f" where b.team_id = '{TEAM}' group by b.spend_micro_usd")
    spend, recorded, records = int(spend), int(recorded), int(records)
    ok = sum(n for (_, status), n in answers.items() if status == 200)
    server_errors = {f"{api}:{status}": n for (api, status), n in answers.items()
                     if isinstance(status, int) and status >= 500}
    upstream = len([line for line in stack.upstream_log.read_text().splitlines()
                    if MODEL in line]) if stack.upstream_log.exists() else None
    result.figures.update({
        "accepted": ok, "finished": records, "duplicates": 0, "double_charges": 0, "drain_s": None,
        "answers": {f"{api}:{status}": n for (api, status), n in sorted(answers.items(), key=str)},
        "max_spend_plus_reserved": max(samples), "budget": BUDGET, "spend": spend,
        "recorded_costs": recorded, "upstream_requests": upstream,
        "answered_but_unrecorded": ok - records})
    v = result.check
    v(killed, "the second API was never killed")
    v(max(samples) <= BUDGET, f"spend + reserved reached {max(samples)} > budget {BUDGET}")
    v(spend <= BUDGET, f"spend {spend} above the budget {BUDGET}")
    v(spend == recorded, f"spend {spend} != recorded costs {recorded}")
    v(settled, "budget still reserved 20 s after the load (the dead process's slice was not returned)")
    v(not server_errors, f"5xx answers: {server_errors}")
    v(ok >= 150, f"only {ok} requests admitted; the $1.00 budget fits 200 (budget stranded?)")
    # Spend is written in batches after the responses: a process killed with -9 loses the records
    # of what it answered in its last few milliseconds, and its slice (with those estimates) goes
    # back to the team. So answered requests may pass the recorded ones by at most what the killed
    # process's clients (4 threads) had in flight around the kill.
    v(ok <= records + 4, f"{ok} requests answered 200 but only {records} recorded")
    v(records * PRICE <= BUDGET, f"{records} recorded requests of {PRICE} pass the budget {BUDGET}")
