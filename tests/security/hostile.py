"""Hostile-tenant suite, run against the real binaries by scripts/security.

Every operation of /openapi.json is called with no key, a garbage key, another team's key, a
rotated (revoked) key and a suspended team's key: none may answer 2xx or show the victim team's
data (canary strings planted in its objects). Then every field of every JSON body is sent NUL
bytes, huge strings, overflowing and negative numbers and wrong types: a value the document
forbids must be refused with a 4xx carrying {"detail"}, and nothing may answer 5xx. Webhook URLs
to internal addresses are refused, and the victim's balance and ledger are unchanged at the end.
The OpenAI Files and Batch routes get the victim's file and batch ids (another team must get 404),
and `POST /v1/files` its own multipart section (framing, field names, filenames, duplicates).

The checks live in the hostile_suite package beside this file: client.py (requests, the canary,
failures), tenants.py (the victim and attacker set-up), document.py (operations, valid bodies and
field rules from /openapi.json), credentials.py (wrong keys, webhook URLs), fields.py (hostile
fields and query parameters), uploads.py (multipart uploads), greedy.py (slow and large clients).
"""

import sys

import requests

from hostile_suite import client
from hostile_suite.client import BASE, fail
from hostile_suite.credentials import check_credentials, check_ssrf
from hostile_suite.fields import check_hostile_fields, check_hostile_queries
from hostile_suite.greedy import check_greedy_clients
from hostile_suite.tenants import balance_and_ledger, setup
from hostile_suite.uploads import check_multipart_upload


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
    print(f"hostile suite: {client.CHECKED} requests, {len(client.FAILURES)} failures")
    print(f"{client.CHECKED - len(client.FAILURES)} passed, {len(client.FAILURES)} failed")
    sys.exit(1 if client.FAILURES else 0)


if __name__ == "__main__":
    main()
