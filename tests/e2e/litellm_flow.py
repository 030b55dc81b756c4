"""The service in front of the real LiteLLM proxy (scripts/e2e-litellm sets it up): a job whose
call falls back from a model the proxy fails (broken-model, HTTP 500) to one it serves
(gpt-4o-mini), the credit charged for the job, the cost recorded for the call, and the
OpenAI-compatible endpoint through the official `openai` SDK, non-streaming and streaming.

Costs: tests/e2e/litellm/config.yaml prices gpt-4o-mini at 2 / 8 USD per million input / output
tokens. Each recorded cost is checked two ways: it equals the cost LiteLLM reports for an
identical request sent straight to the proxy (the x-litellm-response-cost header, or for a stream,
which has no such header, `usage.cost` in the final chunk), and it equals the configured prices
applied to the usage tokens. The service's own price table has other prices for gpt-4o-mini, so a
match means the proxy's figure was used.

Env: SAASLLM_URL, SAASLLM_ADMIN_KEY, LITELLM_URL, LITELLM_MASTER_KEY, DATABASE_URL (read with psql).
"""

import json
import os
import subprocess
import sys
import time
from decimal import Decimal

import requests
from openai import OpenAI
from tenant import create_team

BASE_URL = os.environ["SAASLLM_URL"]
ADMIN = {"X-Admin-Key": os.environ["SAASLLM_ADMIN_KEY"]}
PROXY_URL = os.environ["LITELLM_URL"]
PROXY_KEY = os.environ["LITELLM_MASTER_KEY"]
DATABASE_URL = os.environ["DATABASE_URL"]
TEAM_ID = "team_litellm"

# Must match tests/e2e/litellm/config.yaml.
INPUT_USD_PER_TOKEN = Decimal("0.000002")
OUTPUT_USD_PER_TOKEN = Decimal("0.000008")

checks = []


def check(name, condition, detail=""):
    if not condition:
        raise AssertionError(f"{name}: {detail}")
    checks.append(name)


def post(path, body, headers=ADMIN):
    response = requests.post(f"{BASE_URL}{path}", json=body, headers=headers, timeout=60)
    if not response.ok:
        raise AssertionError(f"POST {path} -> {response.status_code}: {response.text}")
    return response.json()


def sql(query):
    """Rows of a query as lists of strings (psql unaligned output)."""
    out = subprocess.run(
        ["psql", DATABASE_URL, "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", query],
        check=True, capture_output=True, text=True,
    ).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def micro_usd(dollars):
    """USD (a header's text or a number) to whole micro-dollars, rounded as the service rounds."""
    return int((Decimal(str(dollars)) * 1_000_000).to_integral_value(rounding="ROUND_HALF_UP"))


def priced(prompt_tokens, completion_tokens):
    return micro_usd(prompt_tokens * INPUT_USD_PER_TOKEN + completion_tokens * OUTPUT_USD_PER_TOKEN)


def direct_cost(body):
    """LiteLLM's x-litellm-response-cost for the request sent straight to the proxy."""
    response = requests.post(
        f"{PROXY_URL}/v1/chat/completions", json=body, timeout=60,
        headers={"Authorization": f"Bearer {PROXY_KEY}"},
    )
    response.raise_for_status()
    header = response.headers.get("x-litellm-response-cost")
    check("proxy reports a cost header", header is not None, dict(response.headers))
    return header, response.json()["usage"]


def direct_stream_cost(body):
    """LiteLLM's cost for a streamed request sent straight to the proxy: a stream has no cost
    header (the headers go out before the usage is known), so LiteLLM puts it in the final
    usage chunk as `usage.cost`."""
    body = dict(body, stream=True, stream_options={"include_usage": True})
    with requests.post(
        f"{PROXY_URL}/v1/chat/completions", json=body, timeout=60, stream=True,
        headers={"Authorization": f"Bearer {PROXY_KEY}"},
    ) as response:
        response.raise_for_status()
        usage = None
        for line in response.iter_lines(decode_unicode=True):
            if line and line.startswith("data:") and line[5:].strip() != "[DONE]":
                event = json.loads(line[5:])
                usage = event.get("usage") or usage
    check("proxy stream ends with usage and cost", usage is not None and "cost" in usage, usage)
    return usage["cost"], usage


def main() -> int:
    summary = {}
    team = create_team(post, "org_litellm", "LiteLLM e2e", "ThroughLiteLLM", ["broken-model", "gpt-4o-mini"],
                       TEAM_ID, 100)
    key = {"Authorization": f"Bearer {team['virtual_key']}"}
    check_job_call(key, summary)
    check_streamed_job_call(key, summary)
    client = OpenAI(api_key=team["virtual_key"], base_url=f"{BASE_URL}/v1", max_retries=0)
    check_sdk_call(client, summary)
    check_sdk_stream(client, summary)

    for name, value in summary.items():
        print(f"  {name}: {value}")
    print(f"litellm-e2e: {len(checks)} passed, 0 failed")
    return 0


def balance(key):
    r = requests.get(f"{BASE_URL}/api/credits/teams/{TEAM_ID}/balance", headers=key, timeout=30)
    r.raise_for_status()
    return r.json()["credits_remaining"]


def check_job_call(key, summary):
    """Job path: fallback from broken-model to gpt-4o-mini, one credit, the proxy's cost."""
    before = balance(key)
    job_id = post("/api/jobs/create", {"team_id": TEAM_ID, "job_type": "litellm_e2e"}, key)["job_id"]
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Summarise the LiteLLM proxy in one line"}]
    result = post(f"/api/jobs/{job_id}/llm-call",
                  {"model_group": "ThroughLiteLLM", "messages": messages, "purpose": "fallback"}, key)
    check("llm-call answered through the proxy",
          result["response"]["content"] == "echo: Summarise the LiteLLM proxy in one line", result)

    call_id = result["call_id"]
    [[status, model_used, prompt, completion, cost]] = sql(
        "select status, model_used, prompt_tokens, completion_tokens, cost_micro_usd "
        f"from llm_calls where call_id = '{call_id}'")
    attempts = sql(f"select model_name, http_status, outcome from llm_call_attempts "
                   f"where call_id = '{call_id}' order by attempt_id")
    check("call succeeded on gpt-4o-mini", (status, model_used) == ("succeeded", "gpt-4o-mini"),
          (status, model_used))
    # The worker retries a 5xx on the same model (UPSTREAM_RETRIES, default 2) before falling back.
    check("broken-model was tried first, retried on the proxy's 500, then fell back",
          attempts == [["broken-model", "500", "retry"], ["broken-model", "500", "retry"],
                       ["broken-model", "500", "fallback"], ["gpt-4o-mini", "200", "succeeded"]],
          attempts)

    completion_result = post(f"/api/jobs/{job_id}/complete", {"status": "completed"}, key)
    after = balance(key)
    check("job charged exactly one credit",
          after == before - 1 == completion_result["costs"]["credits_remaining"], (before, after, completion_result))

    # The service sends the proxy the messages and the group's model; the same request sent
    # directly gets the same usage from the fake upstream and so the same cost from LiteLLM.
    header, usage = direct_cost({"model": "gpt-4o-mini", "messages": messages})
    cost, prompt, completion = int(cost), int(prompt), int(completion)
    check("same usage as the direct request",
          (prompt, completion) == (usage["prompt_tokens"], usage["completion_tokens"]), (prompt, completion, usage))
    check("recorded call cost > 0", cost > 0, cost)
    check("recorded call cost == LiteLLM's x-litellm-response-cost", cost == micro_usd(header), (cost, header))
    check("recorded call cost == configured prices x tokens", cost == priced(prompt, completion),
          (cost, prompt, completion))
    summary["job call"] = f"{cost} micro-USD (header {header}, {prompt}+{completion} tokens)"


def check_streamed_job_call(key, summary):
    """Job path, streamed: same fallback, and the cost from LiteLLM's final usage chunk."""
    job_id = post("/api/jobs/create", {"team_id": TEAM_ID, "job_type": "litellm_e2e_stream"}, key)["job_id"]
    stream_messages = [{"role": "user", "content": "Stream the job answer"}]
    events = []
    with requests.post(
        f"{BASE_URL}/api/jobs/{job_id}/llm-call", headers=key, timeout=60, stream=True,
        json={"model_group": "ThroughLiteLLM", "messages": stream_messages, "stream": True},
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines(decode_unicode=True):
            if line and line.startswith("data:") and line[5:].strip() != "[DONE]":
                events.append(json.loads(line[5:]))
    content = "".join(e["content"] for e in events if "content" in e)
    check("streamed llm-call answered through the proxy", content == "echo: Stream the job answer", events)
    call_id = next(e["call_id"] for e in events if "call_id" in e)
    [[status, model_used, cost]] = sql(
        f"select status, model_used, cost_micro_usd from llm_calls where call_id = '{call_id}'")
    attempts = sql(f"select model_name, http_status, outcome from llm_call_attempts "
                   f"where call_id = '{call_id}' order by attempt_id")
    # The streamed call runs the same chain as a worker's, in the same process and with the same
    # cooldown table: the call above left broken-model with 3 failures in a row, so this call's
    # first failure (the 4th) is retried and its second (the 5th, MODEL_COOLDOWN_FAILURES) puts
    # the model in cooldown, so the call falls back at once.
    check("streamed call retried broken-model, then fell back to gpt-4o-mini",
          (status, model_used) == ("succeeded", "gpt-4o-mini")
          and attempts == [["broken-model", "500", "retry"], ["broken-model", "500", "fallback"],
                           ["gpt-4o-mini", "200", "succeeded"]],
          (status, model_used, attempts))
    reported, usage = direct_stream_cost({"model": "gpt-4o-mini", "messages": stream_messages})
    check("streamed call cost == LiteLLM's usage.cost", int(cost) == micro_usd(reported) > 0, (cost, reported))
    check("streamed call cost == configured prices x tokens",
          int(cost) == priced(usage["prompt_tokens"], usage["completion_tokens"]), (cost, usage))
    post(f"/api/jobs/{job_id}/complete", {"status": "completed"}, key)
    summary["streamed job call"] = f"{cost} micro-USD (usage.cost {reported})"


def check_sdk_call(client, summary):
    """OpenAI-compatible path with the team's key, through the proxy."""
    sdk_messages = [{"role": "user", "content": "Hello from the openai SDK"}]
    response = client.chat.completions.create(model="gpt-4o-mini", messages=sdk_messages)
    check("SDK non-streaming answer", response.choices[0].message.content == "echo: Hello from the openai SDK",
          response)
    header, _ = direct_cost({"model": "gpt-4o-mini", "messages": sdk_messages})
    [[source, cost, prompt, completion]] = sql(
        "select cost_source, cost_micro_usd, prompt_tokens, completion_tokens from spend_records "
        "where team_id = 'team_litellm' and not stream")
    cost, prompt, completion = int(cost), int(prompt), int(completion)
    check("SDK non-streaming cost taken from the proxy's header", source == "header", source)
    check("SDK non-streaming cost == x-litellm-response-cost", cost == micro_usd(header) > 0, (cost, header))
    check("SDK non-streaming cost == configured prices x tokens", cost == priced(prompt, completion),
          (cost, prompt, completion))
    summary["/v1 non-streaming"] = f"{cost} micro-USD (header {header})"


def check_sdk_stream(client, summary):
    """The same, streamed: the cost from LiteLLM's final usage chunk."""
    stream_messages = [{"role": "user", "content": "Stream this back please"}]
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=stream_messages, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    check("SDK streaming answer", "".join(pieces) == "echo: Stream this back please", pieces)
    check("SDK stream came in pieces", len(pieces) > 1, pieces)
    reported, _ = direct_stream_cost({"model": "gpt-4o-mini", "messages": stream_messages})
    rows = []
    for _ in range(50):  # the spend of a stream is recorded just after its last byte
        rows = sql("select status, cost_source, cost_micro_usd, prompt_tokens, completion_tokens "
                   "from spend_records where team_id = 'team_litellm' and stream")
        if rows and rows[0][0] != "reserved":
            break
        time.sleep(0.1)
    [[status, source, cost, prompt, completion]] = rows
    cost, prompt, completion = int(cost), int(prompt), int(completion)
    check("SDK streaming spend recorded", status == "recorded", rows)
    check("SDK streaming cost == LiteLLM's usage.cost", cost == micro_usd(reported) > 0, (cost, reported, source))
    check("SDK streaming cost == configured prices x tokens", cost == priced(prompt, completion),
          (cost, prompt, completion))
    summary["/v1 streaming"] = f"{cost} micro-USD (usage.cost {reported})"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as error:
        print(f"FAILED after {len(checks)} passed checks: {error}", file=sys.stderr)
        print(f"litellm-e2e: {len(checks)} passed, 1 failed")
        sys.exit(1)
