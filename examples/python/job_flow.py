"""The SaaS LiteLLM job flow with plain HTTP (`requests`): create a job, make LLM calls in it,
complete it, and read what it cost.

A job is one unit of work for your users (analysing a document, parsing a resume...). Opening it
holds 1 credit; completing it with status "completed" charges that credit, exactly once, however
many LLM calls it made. A job completed as "failed" is not charged.

Configuration (environment):
    SAASLLM_URL          base URL of the service, e.g. http://localhost:8000
    SAASLLM_API_KEY      the team's virtual key (sk-...)
    SAASLLM_TEAM_ID      the team's id, e.g. team_engineering
    SAASLLM_MODEL_GROUP  a model group granted to the team, e.g. ChatAgent

Run: python3 job_flow.py
"""

import os
import sys
import time
from typing import Any, Dict, List, Optional

import requests

BASE_URL = os.environ.get("SAASLLM_URL", "http://localhost:8000").rstrip("/")
API_KEY = os.environ["SAASLLM_API_KEY"]
TEAM_ID = os.environ["SAASLLM_TEAM_ID"]
MODEL_GROUP = os.environ.get("SAASLLM_MODEL_GROUP", "ChatAgent")

# A synchronous llm-call waits for the model's answer (the server gives up after
# SYNC_CALL_TIMEOUT_SECS, 300 s by default), so allow a generous read timeout.
TIMEOUT = (5, 330)


class SaasLLMError(Exception):
    """An error answer from the service: every error body is {"detail": "..."}."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class SaasLLMClient:
    def __init__(self, base_url: str, api_key: str, team_id: str):
        self.base_url = base_url
        self.team_id = team_id
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    def _request(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> requests.Response:
        response = self.session.request(method, f"{self.base_url}{path}", json=body, timeout=TIMEOUT)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise SaasLLMError(response.status_code, detail)
        return response

    def create_job(self, job_type: str, metadata: Dict[str, Any], user_id: Optional[str] = None) -> str:
        body = {"team_id": self.team_id, "job_type": job_type, "metadata": metadata}
        if user_id is not None:
            body["user_id"] = user_id
        return self._request("POST", "/api/jobs/create", body).json()["job_id"]

    def llm_call(self, job_id: str, model_group: str, messages: List[Dict[str, str]],
                 purpose: Optional[str] = None) -> Dict[str, Any]:
        """Runs one call and waits for its answer. The group's models are tried in priority order."""
        body: Dict[str, Any] = {"model_group": model_group, "messages": messages}
        if purpose is not None:
            body["purpose"] = purpose
        return self._request("POST", f"/api/jobs/{job_id}/llm-call", body).json()

    def complete_job(self, job_id: str, status: str, metadata: Optional[Dict[str, Any]] = None,
                     error_message: Optional[str] = None) -> Dict[str, Any]:
        body: Dict[str, Any] = {"status": status, "metadata": metadata or {}}
        if error_message is not None:
            body["error_message"] = error_message
        response = self._request("POST", f"/api/jobs/{job_id}/complete", body)
        job = response.json()
        # 202 means calls were still running: the job settles when they finish. Poll until then.
        deadline = time.monotonic() + 600
        while response.status_code == 202 or job.get("status") == "completing":
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still completing after 10 minutes")
            time.sleep(0.5)
            response = self._request("GET", f"/api/jobs/{job_id}")
            job = response.json()
        return job

    def get_balance(self) -> Dict[str, Any]:
        return self._request("GET", f"/api/credits/teams/{self.team_id}/balance").json()


def main() -> int:
    client = SaasLLMClient(BASE_URL, API_KEY, TEAM_ID)

    job_id = client.create_job(
        job_type="document_analysis",
        metadata={"document_id": "doc_456", "source": "examples/python/job_flow.py"},
        user_id="user_123",
    )
    print(f"Job created: {job_id}")

    try:
        summary = client.llm_call(
            job_id, MODEL_GROUP,
            messages=[
                {"role": "system", "content": "You summarise documents in one sentence."},
                {"role": "user", "content": "Summarise: SaaS LiteLLM meters LLM usage per team with credits."},
            ],
            purpose="summary",
        )
        keywords = client.llm_call(
            job_id, MODEL_GROUP,
            messages=[{"role": "user", "content": f"List three keywords for: {summary['response']['content']}"}],
            purpose="keywords",
        )
    except Exception as error:
        # Close the job as failed so its held credit is released (a failed job is not charged).
        client.complete_job(job_id, "failed", error_message=str(error))
        raise

    job = client.complete_job(job_id, "completed", metadata={"result": "success"})

    print(f"Summary: {summary['response']['content']}")
    print(f"Keywords: {keywords['response']['content']}")
    costs = job["costs"]
    print(f"Job {job['status']}: {costs['total_calls']} calls ({costs['successful_calls']} succeeded, "
          f"{costs['failed_calls']} failed), {costs['total_tokens']} tokens, "
          f"${costs['total_cost_usd']:.6f}, average latency {costs['avg_latency_ms']} ms, "
          f"credit charged: {'yes' if costs['credit_applied'] else 'no'}")
    print(f"Credits remaining: {costs['credits_remaining']}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SaasLLMError as error:
        print(f"SaaS LiteLLM error: {error}", file=sys.stderr)
        sys.exit(1)
