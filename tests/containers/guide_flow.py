"""The guide's flow against the compose stack (scripts/containers), standard library only.

--phase guide: an organization, a model group served through the LiteLLM proxy (with a broken
model first, so the service's fallback runs), a team with 10 credits, a job with a synchronous
call, complete: exactly one credit charged, the ledger says so.
--phase batch: a job of 60 calls submitted at once; the given command (killing a worker) runs
right after the submission; every call must still succeed, and completing charges one credit.
"""

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request


class Api:
    def __init__(self, base, key):
        self.base, self.key = base, key

    def call(self, method, path, body=None, key=None, expect=(200, 201, 202)):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {key or self.key}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        if status not in expect:
            sys.exit(f"{method} {path}: {status} {text}")
        return json.loads(text) if text else None


def check(condition, message):
    if not condition:
        sys.exit(f"containers guide flow: {message}")


def team(api, team_id, credits):
    created = api.call("POST", "/api/teams/create", {
        "organization_id": "org_containers", "team_id": team_id,
        "model_groups": ["ChatAgent"], "credits_allocated": credits})
    return created["virtual_key"]


def guide(api):
    api.call("POST", "/api/organizations/create",
             {"organization_id": "org_containers", "name": "Containers"})
    api.call("POST", "/api/model-groups/create", {
        "group_name": "ChatAgent",
        "models": [{"model_name": "broken-model", "priority": 0},
                   {"model_name": "gpt-4o-mini", "priority": 1}]})
    key = team(api, "team_guide", 10)
    job = api.call("POST", "/api/jobs/create",
                   {"team_id": "team_guide", "job_type": "document_analysis"}, key=key)
    answer = api.call("POST", f"/api/jobs/{job['job_id']}/llm-call", {
        "model_group": "ChatAgent",
        "messages": [{"role": "user", "content": "Analyze this document"}]}, key=key)
    check("Analyze this document" in answer["response"]["content"], f"answer {answer}")
    calls = api.call("GET", f"/api/jobs/{job['job_id']}/calls", key=key)["calls"]
    check([c["model_used"] for c in calls] == ["gpt-4o-mini"], f"fallback not used: {calls}")
    done = api.call("POST", f"/api/jobs/{job['job_id']}/complete", {"status": "completed"}, key=key)
    check(done["costs"]["credit_applied"] is True, f"complete {done}")
    balance = api.call("GET", "/api/credits/teams/team_guide/balance", key=key)
    check(balance["credits_remaining"] == 9, f"balance {balance}")
    print("guide flow: call through LiteLLM with fallback, one credit charged", file=sys.stderr)


def batch(api, kill_command):
    api.call("POST", "/api/model-groups/create", {
        "group_name": "SlowAgent", "models": [{"model_name": "slow-model", "priority": 0}]})
    key = api.call("POST", "/api/teams/create", {
        "organization_id": "org_containers", "team_id": "team_batch",
        "model_groups": ["SlowAgent"], "credits_allocated": 5})["virtual_key"]
    job = api.call("POST", "/api/jobs/create",
                   {"team_id": "team_batch", "job_type": "batch"}, key=key)
    # 300 ms each (the slow model), so the kill lands while calls run.
    calls = [{"custom_id": f"doc-{i}", "model_group": "SlowAgent",
              "messages": [{"role": "user", "content": f"document {i}"}]}
             for i in range(60)]
    api.call("POST", f"/api/jobs/{job['job_id']}/llm-calls", {"calls": calls}, key=key)
    if kill_command:
        subprocess.run(kill_command, shell=True, check=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while True:
        progress = api.call("GET", f"/api/jobs/{job['job_id']}", key=key)["progress"]
        if progress["queued"] + progress["running"] == 0:
            break
        check(time.monotonic() < deadline, f"calls not finished: {progress}")
        time.sleep(1)
    check(progress["succeeded"] == 60, f"progress {progress}")
    done = api.call("POST", f"/api/jobs/{job['job_id']}/complete", {"status": "completed"}, key=key)
    check(done["costs"]["credit_applied"] is True, f"complete {done}")
    balance = api.call("GET", "/api/credits/teams/team_batch/balance", key=key)
    check(balance["credits_remaining"] == 4, f"balance {balance}")
    print("batch: 60 calls all succeeded with a worker killed mid-batch, one credit", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("admin_key")
    parser.add_argument("--phase", choices=["guide", "batch"], required=True)
    parser.add_argument("--kill-after-submit", default="")
    args = parser.parse_args()
    api = Api(args.base, args.admin_key)
    if args.phase == "guide":
        guide(api)
    else:
        batch(api, args.kill_after_submit)


if __name__ == "__main__":
    main()
