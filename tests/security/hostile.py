"""Hostile-tenant suite, run against the real binaries by scripts/security.

Every operation of /openapi.json is called with no key, a garbage key, another team's key, a
rotated (revoked) key and a suspended team's key: none may answer 2xx or show the victim team's
data (canary strings planted in its objects). Then every field of every JSON body is sent NUL
bytes, huge strings, overflowing and negative numbers and wrong types: a value the document
forbids must be refused with a 4xx carrying {"detail"}, and nothing may answer 5xx. Webhook URLs
to internal addresses are refused, and the victim's balance and ledger are unchanged at the end.
The OpenAI Files and Batch routes get the victim's file and batch ids (another team must get 404),
and `POST /v1/files` its own multipart section (framing, field names, filenames, duplicates).
"""

import json
import os
import sys
import uuid

import requests

BASE = os.environ["SAASLLM_URL"].rstrip("/")
ADMIN = {"X-Admin-Key": os.environ["SAASLLM_ADMIN_KEY"]}
CANARY = "canary-" + uuid.uuid4().hex[:12]
FAILURES = []
CHECKED = 0


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def call(method, path, headers=None, body=None, raw=None):
    global CHECKED
    CHECKED += 1
    kwargs = {"headers": dict(headers or {}), "timeout": 30}
    if raw is not None:
        kwargs["data"] = raw
        kwargs["headers"]["Content-Type"] = "application/json"
    elif body is not None:
        kwargs["json"] = body
    return requests.request(method, BASE + path, **kwargs)


def fail(message):
    FAILURES.append(message)
    print("FAIL:", message, file=sys.stderr)


def ok(response, what):
    if not response.ok:
        sys.exit(f"setup step failed: {what}: {response.status_code} {response.text[:300]}")
    return response.json()


# --- Set-up: a victim team full of canaries, an attacker team, a rotated and a suspended key.
def setup():
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
    import time
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


def call_multipart(headers, fields, content_type=None, raw=None):
    """POST /v1/files with `fields` as (name, filename or None, bytes), or a `raw` body."""
    global CHECKED
    CHECKED += 1
    headers = dict(headers)
    if raw is not None:
        headers["Content-Type"] = content_type or "multipart/form-data; boundary=X"
        return requests.post(BASE + "/v1/files", headers=headers, data=raw, timeout=60)
    files = [(name, (filename, data) if filename is not None else (None, data)) for name, filename, data in fields]
    return requests.post(BASE + "/v1/files", headers=headers, files=files, timeout=60)


def balance_and_ledger(ids):
    balance = ok(call("GET", f"/api/credits/teams/{ids['team']}/balance", ADMIN), "balance")
    ledger = ok(call("GET", f"/api/credits/teams/{ids['team']}/transactions?limit=100", ADMIN), "ledger")
    return balance, ledger


# --- Operations of the document, with their path parameters filled with the victim's objects.
def operations(document, ids):
    values = {"team_id": ids["team"], "job_id": ids["job"], "call_id": ids["call"],
              "organization_id": ids["org"], "group_name": ids["group"],
              "admin_key_id": ids["admin_key"], "file_id": ids["file"], "batch_id": ids["batch"]}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            concrete = path
            for name, value in values.items():
                concrete = concrete.replace("{" + name + "}", value)
            if "{" in concrete:
                fail(f"{method} {path}: no value for a path parameter; add it to the suite")
                continue
            yield method.upper(), path, concrete, operation


def resolve(document, schema):
    while isinstance(schema, dict) and "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema or {}


# Valid bodies per operation (path template), so that one field at a time can be made hostile.
def base_bodies(ids):
    fresh = uuid.uuid4().hex[:8]
    message = [{"role": "user", "content": "hello"}]
    return {
        ("POST", "/api/organizations/create"): {"organization_id": f"org_{fresh}", "name": "Org"},
        ("POST", "/api/model-groups/create"): {"group_name": f"G_{fresh}", "models": [{"model_name": "gpt-4o", "priority": 0}]},
        ("PUT", "/api/model-groups/{group_name}/models"): {"models": [{"model_name": "gpt-4o-mini", "priority": 0}]},
        ("POST", "/api/teams/create"): {"organization_id": ids["org_b"], "team_id": f"t_{fresh}", "credits_allocated": 1},
        ("PUT", "/api/teams/{team_id}/limits"): {"max_concurrent_calls": 10},
        ("PUT", "/api/teams/{team_id}/alerts"): {"url": "https://hooks.example.com/alerts", "credits_below": 5,
                                                 "budget_spend_pct": 80},
        ("PUT", "/api/teams/{team_id}/refills"): {"credit_grant": {"credits": 10, "period": "1mo"},
                                                  "budget_duration": "30d"},
        ("POST", "/api/admin-keys/create"): {"name": f"k_{fresh}", "role": "viewer"},
        ("PUT", "/api/teams/{team_id}/model-groups"): [ids["group"]],
        ("POST", "/api/credits/teams/{team_id}/add"): {"credits_amount": 1, "reason": "fuzz"},
        ("POST", "/api/credits/teams/{team_id}/check"): {"credits_required": 1},
        ("POST", "/api/jobs/create"): {"team_id": ids["team"], "job_type": "fuzz", "metadata": {"k": "v"}},
        ("POST", "/api/jobs/{job_id}/llm-call"): {"model_group": ids["group"], "messages": message, "async": True},
        ("POST", "/api/jobs/{job_id}/llm-calls"): {"calls": [{"model_group": ids["group"], "messages": message}]},
        ("POST", "/api/jobs/{job_id}/complete"): {"status": "completed"},
        ("POST", "/v1/chat/completions"): {"model": "gpt-4o-mini", "messages": message, "max_tokens": 5},
        ("POST", "/v1/embeddings"): {"model": "gpt-4o-mini", "input": ["hello", "world"]},
        ("POST", "/v1/batches"): batch_body(ids["file"]),
    }


def leaks(response):
    return CANARY in response.text


def admin_only(operation):
    security = operation.get("security") or [{}]
    return "admin_key" in security[0]


VICTIM_PARAMETERS = ("{team_id}", "{job_id}", "{call_id}", "{organization_id}", "{file_id}", "{batch_id}")


def check_credentials(document, ids):
    """Every secured operation, with every kind of wrong key."""
    refused = (400, 403, 404, 405, 409, 422)
    wrong = {
        "none": ({}, (401,)),
        "garbage": (bearer("sk-" + "0" * 64), (401,)),
        "garbage admin header": ({"X-Admin-Key": "nope\u00e9".encode("utf-8")}, (401,)),
        "rotated": (bearer(ids["key_rotated"]), (401,)),
        "suspended": (bearer(ids["key_suspended"]), (403,)),
        "other team": (bearer(ids["key_b"]), refused),
    }
    bodies = base_bodies(ids)
    for method, template, path, operation in operations(document, ids):
        if not operation.get("security"):
            continue
        body = bodies.get((method, template))
        cases = dict(wrong)
        if admin_only(operation):
            cases["the team's own key"] = (bearer(ids["key"]), (403,))
        if (method, template) == ("POST", "/v1/batches"):
            # The body names the victim's file: to another team it does not exist.
            cases["other team"] = (bearer(ids["key_b"]), (404,))
        elif template.startswith("/v1/") and any(p in template for p in VICTIM_PARAMETERS):
            # Another team's file or batch is a 404, exactly like one that does not exist.
            cases["other team"] = (bearer(ids["key_b"]), (404,))
        elif not any(p in template for p in VICTIM_PARAMETERS):
            # Names no victim object: the other team acts for itself; only leaks count.
            cases["other team"] = (bearer(ids["key_b"]), refused + (200, 201, 202))
        for name, (headers, allowed) in cases.items():
            response = call(method, path, headers, body)
            if response.status_code not in allowed:
                fail(f"{method} {template} with {name} key: {response.status_code} (expected {allowed}): {response.text[:200]}")
            if leaks(response):
                fail(f"{method} {template} with {name} key: the victim's data leaked: {response.text[:200]}")


HOSTILE = [
    ("NUL", "\u0000"), ("NUL inside", "a\u0000b"), ("huge string", "x" * 300_000),
    ("negative", -1), ("zero", 0), ("i64 min", -(2**63)), ("i64 max", 2**63 - 1), ("u64 overflow", 2**64 + 1),
    ("float overflow", 1e308), ("fraction", 0.5), ("empty string", ""), ("array", []), ("object", {}),
    ("bool", True), ("null", None),
]


def violates(document, schema, value):
    """Whether `value` breaks what the document says of the field (type and bounds)."""
    schema = resolve(document, schema)
    if "oneOf" in schema or "anyOf" in schema:
        options = schema.get("oneOf") or schema.get("anyOf")
        return all(violates(document, option, value) for option in options)
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds] if kinds else []
    if not kinds:
        return isinstance(value, str) and "\u0000" in value
    checks = {
        "null": lambda v: v is None,
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "string": lambda v: isinstance(v, str),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    if not any(checks[k](value) for k in kinds if k in checks):
        return True
    if isinstance(value, str):
        return ("\u0000" in value or len(value) < schema.get("minLength", 0)
                or len(value) > schema.get("maxLength", 10**9))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "integer" in kinds and ("number" not in kinds) and not float(value).is_integer():
            return True
        return (value < schema.get("minimum", -(2**63)) or value > schema.get("maximum", 2**63 - 1)
                or value <= schema.get("exclusiveMinimum", float("-inf")))
    if isinstance(value, list):
        return len(value) < schema.get("minItems", 0)
    return False


def fresh_job(ids):
    job = ok(call("POST", "/api/jobs/create", bearer(ids["key"]), {"team_id": ids["team"], "job_type": "fuzz"}), "job")
    return job["job_id"]


# The rules of the OpenAI bodies that their document states in words (these bodies pass other
# parameters through to the upstream, so only the fields the service reads are listed).
OPENAI_FIELDS = {
    "/v1/chat/completions": {
        "model": {"type": "string", "minLength": 1}, "max_tokens": {"type": "integer", "minimum": 1},
        "n": {"type": "integer", "minimum": 1}, "messages": {"type": "array", "minItems": 1}},
    "/v1/embeddings": {
        "model": {"type": "string", "minLength": 1},
        "input": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1}]},
        "dimensions": {"type": ["integer", "null"], "minimum": 1},
        "encoding_format": {"type": ["string", "null"]}},
}


def check_hostile_fields(document, ids):
    """One field at a time made hostile, with the key that may call the operation."""
    for method, template, path, operation in operations(document, ids):
        content = operation.get("requestBody", {}).get("content", {}).get("application/json")
        openai = template.startswith("/v1/")
        if content is None and template != "/v1/chat/completions":
            continue  # no JSON body (POST /v1/files is multipart: check_multipart_upload)
        base = base_bodies(ids).get((method, template))
        if base is None:
            fail(f"{method} {template}: no base body in the suite; add one")
            continue
        headers = ADMIN if admin_only(operation) else bearer(ids["key"])
        schema = resolve(document, content["schema"]) if content else {}
        schema = next((resolve(document, s) for s in schema.get("oneOf", []) if s.get("type") != "null"), schema)
        fields = schema.get("properties", {}) if isinstance(base, dict) else {}
        fields = OPENAI_FIELDS.get(template, fields)
        for field, field_schema in fields.items():
            for label, value in HOSTILE:
                if "{job_id}" in template:
                    # A job of its own, so that one accepted body cannot close it for the rest.
                    path = template.replace("{job_id}", fresh_job(ids))
                body = dict(base)
                body[field] = value
                response = call(method, path, headers, body)
                where = f"{method} {template} {field}={label}"
                if response.status_code >= 500:
                    fail(f"{where}: {response.status_code} {response.text[:200]}")
                elif violates(document, field_schema, value) and response.ok:
                    fail(f"{where}: accepted a value the document forbids ({response.status_code})")
                elif not response.ok and not openai and "detail" not in response.text:
                    fail(f"{where}: {response.status_code} without a detail")
        # Bodies that are not the right JSON at all.
        for raw in ['{"a":', "[]", '"\\u0000"', "\u0000", "{}" * 1000, '{"x": "\\ud800"}']:
            response = call(method, path, headers, raw=raw.encode("utf-8", "surrogatepass"))
            # An empty list is a valid list of groups; for other bodies serde reads a JSON array
            # as a struct's fields in order, so `[]` is accepted exactly where `{}` is.
            valid = raw == "[]" and (template.endswith("/model-groups")
                                     or call(method, path, headers, raw=b"{}").ok)
            if response.status_code >= 500 or (response.ok and not valid):
                fail(f"{method} {template} raw body {raw[:10]!r}: {response.status_code} {response.text[:120]}")


def check_hostile_queries(document, ids):
    """Query parameters with out-of-range, NUL and far-out values."""
    values = ["-9223372036854775808", "99999999999999999999", "-1", "%00", "abc", "-262143-01-01", "9999999-01-01"]
    for method, template, path, operation in operations(document, ids):
        for parameter in operation.get("parameters", []):
            if parameter.get("in") != "query":
                continue
            for value in values:
                response = call(method, f"{path}?{parameter['name']}={value}", ADMIN)
                if response.status_code >= 500:
                    fail(f"{method} {template}?{parameter['name']}={value}: {response.status_code} {response.text[:200]}")
    for template in ["/api/jobs/%00", "/api/teams/a%00b", "/api/model-groups/%00/models", "/api/jobs/" + "9" * 5000]:
        response = call("GET", template, ADMIN)
        if response.status_code >= 500 or response.ok:
            fail(f"GET {template[:40]}: {response.status_code}")
    # The OpenAI lists and objects with the team's key: hostile cursors, limits and ids.
    victim = bearer(ids["key"])
    for query in ["limit=0", "limit=-1", "limit=1000000000", "limit=1e9", "after=%00", "after=" + "a" * 5000,
                  f"after={ids['file']}&limit=abc", "order=sideways", "purpose=%00", "after=%27%20or%201%3D1--"]:
        for template in ["/v1/files", "/v1/batches"]:
            response = call("GET", f"{template}?{query}", victim)
            if response.status_code >= 500:
                fail(f"GET {template}?{query[:30]}: {response.status_code} {response.text[:120]}")
    attacker = bearer(ids["key_b"])
    for template in ["/v1/files", "/v1/batches"]:
        victim_id = ids["file"] if template == "/v1/files" else ids["batch"]
        response = call("GET", f"{template}?after={victim_id}", attacker)
        if response.status_code >= 500 or leaks(response):
            fail(f"GET {template}?after=<victim's id> with another team's key: {response.status_code} {response.text[:120]}")
    for path in ["/v1/files/..%2F..%2Fetc%2Fpasswd", "/v1/files/%00", "/v1/files/%27%20or%201%3D1--",
                 "/v1/batches/%00", "/v1/batches/%27or%271%27%3D%271", "/v1/files/" + "f" * 5000,
                 "/v1/batches/" + "b" * 5000 + "/cancel", "/v1/files/%2e%2e/content"]:
        for method in ["GET", "POST", "DELETE"]:
            response = call(method, path, victim)
            if response.status_code >= 500 or response.ok:
                fail(f"{method} {path[:40]}: {response.status_code} {response.text[:120]}")


SSRF_URLS = [
    "http://127.0.0.1/", "http://127.1/", "http://0x7f000001/", "http://2130706433/", "http://0177.0.0.1/",
    "http://[::ffff:127.0.0.1]/", "http://[::1]/", "http://0.0.0.0/", "http://localhost/", "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/", "http://172.16.0.1/", "http://192.168.1.1/", "http://[fd00::1]/", "http://100.64.0.1/",
    "http://user:pass@hooks.example.com/", "file:///etc/passwd", "gopher://127.0.0.1/",
]


def check_ssrf(ids):
    for url in SSRF_URLS:
        response = call("POST", "/api/jobs/create", bearer(ids["key"]),
                        {"team_id": ids["team"], "job_type": "ssrf", "callback_url": url})
        if response.status_code != 400:
            fail(f"callback_url {url}: {response.status_code} (expected 400) {response.text[:160]}")


def multipart(*parts, end=True):
    """A multipart body (boundary X) of (headers line, content) parts."""
    body = b"".join(b"--X\r\nContent-Disposition: form-data; " + head + b"\r\n\r\n" + data + b"\r\n"
                    for head, data in parts)
    return body + (b"--X--\r\n" if end else b"")


def check_multipart_upload(ids):
    """POST /v1/files with broken framing, hostile field names and filenames, repeated fields and
    a Content-Length that lies: each is a 4xx in OpenAI's error shape and stores nothing."""
    victim = bearer(ids["key"])
    purpose = (b'name="purpose"', b"batch")
    content = batch_file(ids["group"]).encode()
    file_part = (b'name="file"; filename="in.jsonl"', content)
    refused = {
        "JSON instead of multipart": (json.dumps({"file": "x", "purpose": "batch"}).encode(), "application/json"),
        "no boundary": (multipart(purpose, file_part), "multipart/form-data"),
        "wrong boundary": (multipart(purpose, file_part), "multipart/form-data; boundary=Y"),
        "no file": (multipart(purpose), None),
        "no purpose": (multipart(file_part), None),
        "file without filename": (multipart(purpose, (b'name="file"', content)), None),
        "empty filename": (multipart(purpose, (b'name="file"; filename=""', content)), None),
        "filename with control characters": (multipart(purpose, (b'name="file"; filename="a\x01\x1b.jsonl"', content)), None),
        "filename of 600 characters": (multipart(purpose, (b'name="file"; filename="' + b"a" * 600 + b'"', content)), None),
        "filename with NUL": (multipart(purpose, (b'name="file"; filename="a\x00b"', content)), None),
        "purpose twice": (multipart(purpose, purpose, file_part), None),
        "file twice": (multipart(purpose, file_part, file_part), None),
        "purpose batch_output": (multipart((b'name="purpose"', b"batch_output"), file_part), None),
        "purpose of 1 MiB": (multipart((b'name="purpose"', b"b" * 1024 * 1024), file_part), None),
        "purpose with NUL": (multipart((b'name="purpose"', b"batch\x00"), file_part), None),
        "purpose invalid UTF-8": (multipart((b'name="purpose"', b"\xff\xfe"), file_part), None),
        "empty file": (multipart(purpose, (b'name="file"; filename="in.jsonl"', b"")), None),
        "field name of 1 MiB": (multipart(purpose, (b'name="' + b"a" * 1024 * 1024 + b'"', b"v")), None),
        "field name not ASCII": (multipart(purpose, (b'name="\xc3\xa9t\xc3\xa9"', b"v"), file_part), None),
        "field name with quote and path": (multipart(purpose, (b'name="../\\"', b"v"), file_part), None),
        "unterminated body": (multipart(purpose, file_part, end=False)[:-2], None),
        "garbage": (b"\x00" * 4096, None),
    }
    before = len(ok(call("GET", "/v1/files?purpose=batch&limit=10000", victim), "files")["data"])
    for name, (raw, content_type) in refused.items():
        response = call_multipart(victim, None, content_type, raw)
        if response.status_code >= 500 or response.ok or "error" not in response.text:
            fail(f"POST /v1/files, {name}: {response.status_code} {response.text[:160]}")
    # Thousands of ignored fields and a filename with directories are still a plain upload.
    accepted = {
        "10,000 extra fields": multipart(*[(b'name="f%d"' % i, b"v") for i in range(10_000)], purpose, file_part),
        "filename with ../": multipart(purpose, (b'name="file"; filename="../../etc/passwd"', content)),
    }
    for name, raw in accepted.items():
        response = call_multipart(victim, None, None, raw)
        if response.status_code != 200:
            fail(f"POST /v1/files, {name}: {response.status_code} {response.text[:160]}")
        elif "/" in name and response.json()["filename"] != "../../etc/passwd":
            fail(f"POST /v1/files, {name}: filename changed to {response.json()['filename']!r}")
    after = len(ok(call("GET", "/v1/files?purpose=batch&limit=10000", victim), "files")["data"])
    if after != before + len(accepted):
        fail(f"refused uploads left files behind: {before} + {len(accepted)} accepted -> {after}")
    check_content_length_lies(ids)


def check_content_length_lies(ids):
    """A Content-Length above the upload limit (with a small, complete body) and one shorter than
    the body (which cuts the multipart framing: a 400): the API reads no more than was sent,
    answers, and stays up."""
    import socket

    host, port = BASE.split("//", 1)[1].split(":")
    body = multipart((b'name="purpose"', b"batch"), (b'name="file"; filename="a.jsonl"', b"{}"))
    for label, length, expected in [("above the limit", 300 * 1024 * 1024, (200, 413)), ("short", len(body) - 20, (400,))]:
        global CHECKED
        CHECKED += 1
        with socket.create_connection((host, int(port)), timeout=30) as connection:
            connection.sendall(b"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ids["key"].encode()
                               + b"\r\nContent-Type: multipart/form-data; boundary=X\r\nConnection: close"
                               + b"\r\nContent-Length: %d\r\n\r\n" % length + body[:length])
            answer = b""
            try:
                while chunk := connection.recv(65536):
                    answer += chunk
            except OSError:
                pass
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
        if status not in expected:
            fail(f"POST /v1/files with a Content-Length {label}: {status} (expected {expected}) {answer[:160]!r}")


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
    import socket
    import time

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


def main():
    document = requests.get(BASE + "/openapi.json", timeout=30).json()
    ids = setup()
    before = balance_and_ledger(ids)
    check_credentials(document, ids)
    after_credentials = balance_and_ledger(ids)
    if before != after_credentials:
        fail(f"the victim's balance or ledger changed under other keys: {before} -> {after_credentials}")
    check_ssrf(ids)
    check_hostile_fields(document, ids)
    check_hostile_queries(document, ids)
    check_multipart_upload(ids)
    check_greedy_clients()
    print(f"hostile suite: {CHECKED} requests, {len(FAILURES)} failures")
    print(f"{CHECKED - len(FAILURES)} passed, {len(FAILURES)} failed")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
