"""The official `openai` SDK against SaaS LiteLLM's OpenAI-compatible endpoint: the team's virtual
key is the API key and SAASLLM_URL/v1 the base URL; nothing else changes in your code.

On this path each request is billed in dollars against the team's budget (credits_allocated x
USD_PER_CREDIT, $0.10 per credit by default) rather than by the job: the balance shows it as
spend_usd / budget_usd, and credits_remaining stays as it is. The models the team may use are
those of its model groups (`client.models.list()`); any other model gets 403.

Configuration (environment):
    SAASLLM_URL          base URL of the service, e.g. http://localhost:8000
    SAASLLM_API_KEY      the team's virtual key (sk-...)
    SAASLLM_TEAM_ID      the team's id, used to read its balance
    SAASLLM_MODEL        optional: the model to call (default: the first one the team may use)

Run: python3 openai_sdk.py
"""

import os
import sys

import openai
import requests
from openai import OpenAI

BASE_URL = os.environ.get("SAASLLM_URL", "http://localhost:8000").rstrip("/")
API_KEY = os.environ["SAASLLM_API_KEY"]
TEAM_ID = os.environ["SAASLLM_TEAM_ID"]


def main() -> int:
    client = OpenAI(api_key=API_KEY, base_url=f"{BASE_URL}/v1")

    allowed = [model.id for model in client.models.list()]
    model = os.environ.get("SAASLLM_MODEL") or allowed[0]
    print(f"Models this key may use: {', '.join(allowed)}; using {model}")

    response = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hello!"},
        ],
    )
    print(f"Completion: {response.choices[0].message.content}")
    if response.usage is not None:
        print(f"Tokens: {response.usage.prompt_tokens} in, {response.usage.completion_tokens} out")

    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Tell me a story"}],
        stream=True,
    )
    print("Streamed: ", end="", flush=True)
    for chunk in stream:
        # The last chunk carries only usage, with no choices: guard before indexing.
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()

    # The balance is a SaaS LiteLLM endpoint, not part of the OpenAI API: plain HTTP, same key.
    balance = requests.get(
        f"{BASE_URL}/api/credits/teams/{TEAM_ID}/balance",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    balance.raise_for_status()
    credits = balance.json()
    print(f"Spend: ${credits['spend_usd']:.6f} of a ${credits['budget_usd']:.2f} budget")
    print(f"Credits remaining: {credits['credits_remaining']}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except openai.APIStatusError as error:
        # Errors on /v1 use OpenAI's shape; 402 "Budget exceeded" means the team needs credits.
        print(f"SaaS LiteLLM error: {error.message}", file=sys.stderr)
        sys.exit(1)
