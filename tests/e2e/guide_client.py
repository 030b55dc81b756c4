"""The integration guide's Python SaasLLMClient, unchanged except that every request carries the
team's virtual key, run against a live all-in-one service. Exits non-zero if the flow breaks or
credits_remaining does not drop by exactly 1."""

import os
import sys
from typing import Any, Dict, List

import requests
from tenant import create_team

BASE_URL = os.environ["SAASLLM_URL"]
ADMIN = {"X-Admin-Key": os.environ["SAASLLM_ADMIN_KEY"]}


class SaasLLMClient:
    def __init__(self, base_url: str, team_id: str, virtual_key: str):
        self.base_url = base_url
        self.team_id = team_id
        self.headers = {"Authorization": f"Bearer {virtual_key}"}  # the one addition to the guide

    def create_job(self, job_type: str, user_id: str = None, metadata: Dict = None) -> str:
        response = requests.post(
            f"{self.base_url}/api/jobs/create",
            json={"team_id": self.team_id, "user_id": user_id, "job_type": job_type, "metadata": metadata or {}},
            headers=self.headers,
        )
        response.raise_for_status()
        return response.json()["job_id"]

    def llm_call(self, job_id: str, model_group: str, messages: List[Dict], purpose: str = None,
                 temperature: float = 0.7) -> Dict[str, Any]:
        response = requests.post(
            f"{self.base_url}/api/jobs/{job_id}/llm-call",
            json={"model_group": model_group, "messages": messages, "purpose": purpose, "temperature": temperature},
            headers=self.headers,
        )
        response.raise_for_status()
        return response.json()

    def complete_job(self, job_id: str, status: str = "completed", metadata: Dict = None,
                     error_message: str = None) -> Dict[str, Any]:
        response = requests.post(
            f"{self.base_url}/api/jobs/{job_id}/complete",
            json={"status": status, "metadata": metadata or {}, "error_message": error_message},
            headers=self.headers,
        )
        response.raise_for_status()
        return response.json()

    def get_credits(self) -> Dict[str, Any]:
        response = requests.get(f"{self.base_url}/api/credits/teams/{self.team_id}/balance", headers=self.headers)
        response.raise_for_status()
        return response.json()


def admin_setup() -> str:
    def post(path, body):
        r = requests.post(f"{BASE_URL}{path}", json=body, headers=ADMIN)
        r.raise_for_status()
        return r.json()

    team = create_team(post, "org_your_company", "Your Company", "ResumeAgent",
                       ["fail-503", "gpt-3.5-turbo"], "team_engineering", 1000)
    return team["virtual_key"]


def main() -> int:
    client = SaasLLMClient(base_url=BASE_URL, team_id="team_engineering", virtual_key=admin_setup())
    before = client.get_credits()["credits_remaining"]

    job_id = client.create_job(job_type="document_analysis", user_id="user_123", metadata={"document_id": "doc_456"})
    parse_result = client.llm_call(
        job_id=job_id, model_group="ResumeAgent",
        messages=[{"role": "system", "content": "You are a resume parser."},
                  {"role": "user", "content": "Jane Doe, 10 years of Rust"}],
        purpose="parsing",
    )
    analysis_result = client.llm_call(
        job_id=job_id, model_group="ResumeAgent",
        messages=[{"role": "user", "content": f"Analyze: {parse_result['response']['content']}"}],
        purpose="analysis",
    )
    completion = client.complete_job(job_id=job_id, status="completed", metadata={"result": "success"})
    print(f"Job completed. Credits remaining: {completion['costs']['credits_remaining']}")

    after = client.get_credits()["credits_remaining"]
    assert analysis_result["response"]["content"].startswith("echo: Analyze:"), analysis_result
    assert completion["costs"]["total_calls"] == 2, completion
    assert completion["costs"]["credit_applied"] is True, completion
    assert after == before - 1 == completion["costs"]["credits_remaining"], (before, after, completion)
    print("guide-client-e2e: 1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
