"""Set-up: a victim team full of canaries, an attacker team, a rotated and a suspended key."""

import json
import sys
import time
import uuid

from .client import ADMIN, CANARY, bearer, call, call_multipart, ok


def setup():
    """Returns the ids of every object made, by short name."""
    suffix = uuid.uuid4().hex[:6]
    ids = {"org": f"org_victim_{suffix}", "org_b": f"org_attacker_{suffix}"}
    ok(call("POST", "/api/organizations/create", ADMIN, {"organization_id": ids["org"], "name": CANARY}), "org")
    ok(call("POST", "/api/organizations/create", ADMIN, {"organization_id": ids["org_b"], "name": "Attacker"}), "org b")
    ids["group"] = f"Group_{suffix}"
    ok(call("POST", "/api/model-groups/create", ADMIN,
            {"group_name": ids["group"], "models": [{"model_name": "gpt-4o-mini", "priority": 0}]}), "group")

    def team(name, org):
        team_id = f"{name}_{suffix}"
        created = ok(call("POST", "/api/teams/create", ADMIN, {
            "organization_id": org, "team_id": team_id, "team_alias": CANARY if name == "victim" else name,
            "model_groups": [ids["group"]], "credits_allocated": 10_000}), name)
        return team_id, created["virtual_key"]

    ids["team"], ids["key"] = team("victim", ids["org"])
    ids["team_b"], ids["key_b"] = team("attacker", ids["org_b"])
    ids["team_r"], ids["key_rotated"] = team("rotated", ids["org_b"])
    ok(call("POST", f"/api/teams/{ids['team_r']}/rotate-key", ADMIN), "rotate")
    ids["team_s"], ids["key_suspended"] = team("suspended", ids["org_b"])
    ok(call("POST", f"/api/teams/{ids['team_s']}/suspend", ADMIN), "suspend")

    victim = bearer(ids["key"])
    job = ok(call("POST", "/api/jobs/create", victim, {
        "team_id": ids["team"], "job_type": CANARY, "metadata": {"note": CANARY}}), "job")
    ids["job"] = job["job_id"]
    ids["admin_key"] = ok(call("POST", "/api/admin-keys/create", ADMIN,
                               {"name": f"fuzz_{suffix}", "role": "viewer"}), "admin key")["admin_key_id"]
    result = ok(call("POST", f"/api/jobs/{ids['job']}/llm-call", victim, {
        "model_group": ids["group"], "purpose": CANARY,
        "messages": [{"role": "user", "content": CANARY}]}), "llm-call")
    ids["call"] = result["call_id"]
    upload = call_multipart(victim, [("purpose", None, b"batch"),
                                     ("file", f"{CANARY}.jsonl", batch_file(ids["group"]).encode())])
    ids["file"] = ok(upload, "file upload")["id"]
    ids["batch"] = ok(call("POST", "/v1/batches", victim, batch_body(ids["file"])), "batch")["id"]
    # The batch ends (and pays its line) before the victim's balance is first read.
    deadline = time.time() + 120
    while ok(call("GET", f"/v1/batches/{ids['batch']}", victim), "batch")["status"] not in ("completed", "failed"):
        if time.time() > deadline:
            sys.exit("setup step failed: the victim's batch did not end within 120 s")
        time.sleep(0.5)
    return ids


def batch_file(model, lines=1):
    """A valid batch input file of `lines` cheap chat requests, holding the canary."""
    return "\n".join(json.dumps({"custom_id": f"{CANARY}-{i}", "method": "POST", "url": "/v1/chat/completions",
                                 "body": {"model": model, "max_tokens": 1,
                                          "messages": [{"role": "user", "content": CANARY}]}})
                     for i in range(lines)) + "\n"


def batch_body(file_id):
    return {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h",
            "metadata": {"note": CANARY}}


def balance_and_ledger(ids):
    balance = ok(call("GET", f"/api/credits/teams/{ids['team']}/balance", ADMIN), "balance")
    ledger = ok(call("GET", f"/api/credits/teams/{ids['team']}/transactions?limit=100", ADMIN), "ledger")
    return balance, ledger
