"""The official `openai` Python SDK against the service's OpenAI-compatible endpoint with a team's
virtual key: completions, streaming, models.list(), a disallowed model and an exhausted budget."""

import os
import sys

import openai
import requests
from openai import OpenAI
from tenant import create_team

BASE_URL = os.environ["SAASLLM_URL"]
ADMIN = {"X-Admin-Key": os.environ["SAASLLM_ADMIN_KEY"]}


def post(path, body):
    response = requests.post(f"{BASE_URL}{path}", json=body, headers=ADMIN)
    response.raise_for_status()
    return response.json()


def main() -> int:
    team = create_team(post, "org_sdk", "SDK users", "SdkAgent", ["gpt-3.5-turbo", "chunkdelay-50"],
                       "team_sdk", 1)
    assert team["allowed_models"] == ["gpt-3.5-turbo", "chunkdelay-50"], team

    client = OpenAI(api_key=team["virtual_key"], base_url=f"{BASE_URL}/v1", max_retries=0)

    response = client.chat.completions.create(
        model="gpt-3.5-turbo",
        messages=[{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}],
    )
    assert response.choices[0].message.content == "echo: Hello!", response
    assert response.usage.total_tokens > 0

    stream = client.chat.completions.create(
        model="chunkdelay-50", messages=[{"role": "user", "content": "Tell me a story"}], stream=True,
    )
    pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
    assert "".join(pieces) == "echo: Tell me a story", pieces
    assert len(pieces) > 1, pieces

    assert [m.id for m in client.models.list()] == ["gpt-3.5-turbo", "chunkdelay-50"]

    try:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("a model outside allowed_models was served")
    except openai.PermissionDeniedError as error:
        assert "not allowed" in str(error), error

    try:
        # Budget: 1 credit = $0.10; 100k output tokens of gpt-3.5-turbo could cost $0.15.
        client.chat.completions.create(
            model="gpt-3.5-turbo", max_tokens=100_000, messages=[{"role": "user", "content": "hi"}],
        )
        raise AssertionError("an over-budget request was served")
    except openai.OpenAIError as error:
        assert "budget" in str(error).lower(), error

    print("openai-sdk-e2e: 5 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
