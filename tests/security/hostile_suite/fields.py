"""Hostile values in every body field and query parameter."""

from .client import ADMIN, bearer, call, fail, ok
from .document import HOSTILE, OPENAI_FIELDS, admin_only, base_bodies, leaks, operations, resolve, violates


def fresh_job(ids):
    job = ok(call("POST", "/api/jobs/create", bearer(ids["key"]), {"team_id": ids["team"], "job_type": "fuzz"}), "job")
    return job["job_id"]


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
