"""The OpenAPI document validates as OpenAPI 3.1, and the interactive docs at /docs render in a
real headless Chromium with every documented operation on the page."""

import os
import re
import subprocess
import sys
import tempfile

import requests
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

BASE_URL = os.environ["SAASLLM_URL"]
CHROMIUM = os.environ.get("CHROMIUM", "chromium")


def main() -> int:
    document = requests.get(f"{BASE_URL}/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.1"), document["openapi"]
    validate(document, cls=OpenAPIV31SpecValidator)
    operations = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch")
    }

    with tempfile.TemporaryDirectory() as profile:
        # The flags keep Chromium from reaching for Google's services, which a closed network refuses.
        rendered = subprocess.run(
            [
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", f"{BASE_URL}/docs/",
            ],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout
    assert "SaaS LiteLLM" in rendered, rendered[:2000]
    shown = set(re.findall(r'<span class="opblock-summary-method">(\w+)</span>.*?data-path="([^"]+)"', rendered))
    missing = operations - shown
    assert not missing, f"operations not shown on /docs: {sorted(missing)}"
    print(f"openapi: valid OpenAPI {document['openapi']}, {len(operations)} operations, all shown on /docs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
