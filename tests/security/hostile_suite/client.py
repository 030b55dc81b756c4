"""The service under test as the suite sees it: its address and admin key, the canary planted in
the victim's objects, requests (each one counted) and the failures found."""

import os
import sys
import uuid

import requests

BASE = os.environ["SAASLLM_URL"].rstrip("/")
ADMIN = {"X-Admin-Key": os.environ["SAASLLM_ADMIN_KEY"]}
CANARY = "canary-" + uuid.uuid4().hex[:12]
FAILURES = []
CHECKED = 0  # requests sent, for the summary


def count_request():
    global CHECKED
    CHECKED += 1


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def call(method, path, headers=None, body=None, raw=None):
    count_request()
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


def call_multipart(headers, fields, content_type=None, raw=None):
    """POST /v1/files with `fields` as (name, filename or None, bytes), or a `raw` body."""
    count_request()
    headers = dict(headers)
    if raw is not None:
        headers["Content-Type"] = content_type or "multipart/form-data; boundary=X"
        return requests.post(BASE + "/v1/files", headers=headers, data=raw, timeout=60)
    files = [(name, (filename, data) if filename is not None else (None, data)) for name, filename, data in fields]
    return requests.post(BASE + "/v1/files", headers=headers, files=files, timeout=60)
