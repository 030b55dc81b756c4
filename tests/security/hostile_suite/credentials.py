"""Every secured operation with every kind of wrong key, and webhook URLs to internal addresses."""

from .client import bearer, call, fail
from .document import VICTIM_PARAMETERS, admin_only, base_bodies, leaks, operations


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
