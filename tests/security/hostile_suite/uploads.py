"""POST /v1/files's multipart section: framing, field names, filenames, duplicates, lying lengths."""

import json
import socket

from .client import BASE, bearer, call, call_multipart, count_request, fail, ok
from .tenants import batch_file


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
    host, port = BASE.split("//", 1)[1].split(":")
    body = multipart((b'name="purpose"', b"batch"), (b'name="file"; filename="a.jsonl"', b"{}"))
    for label, length, expected in [("above the limit", 300 * 1024 * 1024, (200, 413)), ("short", len(body) - 20, (400,))]:
        count_request()
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
