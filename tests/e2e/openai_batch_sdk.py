"""The official `openai` Python SDK against the service's Files and Batch APIs with a team's
virtual key: a 1,000-line chat batch and a 500-line embeddings batch run to `completed` with
every custom_id accounted for in the output or error file; a slow batch cancelled midway
withdraws its queued lines at no cost; malformed files and bad lines fail as OpenAI's do; and
another team's key cannot see the batches."""

import json
import os
import sys
import time

import openai
import requests
from openai import OpenAI

BASE_URL = os.environ["SAASLLM_URL"]
ADMIN = {"X-Admin-Key": os.environ["SAASLLM_ADMIN_KEY"]}
CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
# Seconds a batch may take to reach the status awaited, and between two looks at it.
DEADLINE = 120.0
POLL_EVERY = 0.5
ENDED = {"completed", "failed", "expired", "cancelled"}
CHAT_LINES, EMBED_LINES, SLOW_LINES = 1_000, 500, 100
# Lines naming a model the team may not use: they go to the error file as model_not_allowed.
DISALLOWED = {13, 150, 299, 444, 600, 777, 999}
# The slow model's price per 1M tokens (in micro-dollars per token: input 10, output 30), set in
# its group config so each line's cost can be computed from the usage the output file reports.
SLOW_PRICE = {"input_cost_per_million": 10, "output_cost_per_million": 30}
SLOW_MAX_TOKENS = 50
# The most one slow line can cost: a prompt of at most 100 tokens and 50 tokens out.
SLOW_LINE_MAX_MICRO_USD = 100 * 10 + SLOW_MAX_TOKENS * 30


def admin(method, path, body=None):
    response = requests.request(method, f"{BASE_URL}{path}", json=body, headers=ADMIN)
    assert response.ok, f"{method} {path} -> {response.status_code}: {response.text}"
    return response.json()


def team(team_id, groups, credits):
    return admin("POST", "/api/teams/create", {
        "organization_id": "org_batch_sdk", "team_id": team_id, "model_groups": groups,
        "credits_allocated": credits,
    })["virtual_key"]


def micro_usd(usd):
    return round(usd * 1_000_000)


def balance(team_id):
    found = admin("GET", f"/api/credits/teams/{team_id}/balance")
    return micro_usd(found["spend_usd"]), micro_usd(found["budget_reserved_usd"])


def chat_line(custom_id, model, text, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 50}
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body, **extra}


def upload(client, name, lines):
    content = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    uploaded = client.files.create(file=(name, content.encode()), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(content.encode()), uploaded
    return uploaded.id


def start(client, file_id, endpoint, label):
    batch = client.batches.create(
        input_file_id=file_id, endpoint=endpoint, completion_window="24h", metadata={"e2e": label},
    )
    assert batch.status == "validating" and batch.metadata == {"e2e": label}, batch
    assert batch.input_file_id == file_id and batch.endpoint == endpoint, batch
    return batch.id


def wait_for(client, batch_id, statuses, done=None):
    """Polls the batch until its status is one of `statuses` (or `done(batch)` holds)."""
    until = time.monotonic() + DEADLINE
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses or (done is not None and done(batch)):
            return batch
        assert batch.status not in ENDED - set(statuses), (
            f"batch {batch_id} ended {batch.status} while waiting for {statuses}: {batch}")
        assert time.monotonic() < until, f"batch {batch_id} never reached {statuses} in {DEADLINE}s: {batch}"
        time.sleep(POLL_EVERY)


def file_lines(client, file_id):
    """The file's lines by custom_id; a custom_id written twice fails."""
    if file_id is None:
        return {}
    by_id = {}
    for text in client.files.content(file_id).text.splitlines():
        line = json.loads(text)
        assert line["custom_id"] not in by_id, f"custom_id {line['custom_id']} twice in {file_id}"
        assert line["id"].startswith("batch_req_"), line
        by_id[line["custom_id"]] = line
    return by_id


def outcome(client, batch, inputs):
    """Output and error lines by custom_id; together they hold every input line exactly once."""
    output, errors = file_lines(client, batch.output_file_id), file_lines(client, batch.error_file_id)
    both = output.keys() & errors.keys()
    assert not both, f"in both the output and error files: {sorted(both)[:5]}"
    missing, extra = inputs - (output.keys() | errors.keys()), (output.keys() | errors.keys()) - inputs
    assert not missing and not extra, f"batch {batch.id}: missing {sorted(missing)[:5]}, unknown {sorted(extra)[:5]}"
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (len(inputs), len(output), len(errors)), (
        counts, len(inputs), len(output), len(errors))
    for line in output.values():
        assert line["error"] is None and line["response"]["status_code"] == 200, line
    for line in errors.values():
        assert line["response"] is None and line["error"]["message"], line
    return output, errors


def error_codes(errors):
    return {custom_id: line["error"]["code"] for custom_id, line in errors.items()}


def chat_and_embeddings(client):
    """The two large batches, run side by side."""
    chat = []
    for i in range(CHAT_LINES):
        model = "claude-3-opus" if i in DISALLOWED else "gpt-4" if i % 10 == 3 else "BatchChat"
        chat.append(chat_line(f"chat-{i:04}", model, f"document {i}"))
    embed = []
    for i in range(EMBED_LINES):
        text = f"passage {i}" if i % 2 == 0 else [f"passage {i} part {k}" for k in range(1 + i % 3)]
        model = "BatchEmbed" if i % 3 else "text-embedding-3-small"
        embed.append({"custom_id": f"embed-{i:03}", "method": "POST", "url": EMBEDDINGS,
                      "body": {"model": model, "input": text}})
    chat_file, embed_file = upload(client, "chat.jsonl", chat), upload(client, "embed.jsonl", embed)
    chat_id = start(client, chat_file, CHAT, "chat")
    embed_id = start(client, embed_file, EMBEDDINGS, "embeddings")

    done = wait_for(client, chat_id, {"completed"})
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (1000, 993, 7), counts
    assert done.in_progress_at and done.finalizing_at and done.completed_at, done
    output, errors = outcome(client, done, {line["custom_id"] for line in chat})
    assert error_codes(errors) == {f"chat-{i:04}": "model_not_allowed" for i in DISALLOWED}, error_codes(errors)
    for line in output.values():
        i = int(line["custom_id"].removeprefix("chat-"))
        body = line["response"]["body"]
        assert body["choices"][0]["message"]["content"] == f"echo: document {i}", line
        assert body["model"] == ("gpt-4" if i % 10 == 3 else "gpt-3.5-turbo"), line
        assert body["usage"]["total_tokens"] > 0, line

    done = wait_for(client, embed_id, {"completed"})
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (500, 500, 0), counts
    assert done.error_file_id is None, done
    output, _ = outcome(client, done, {line["custom_id"] for line in embed})
    for line in embed:
        inputs = line["body"]["input"]
        data = output[line["custom_id"]]["response"]["body"]["data"]
        assert len(data) == (1 if isinstance(inputs, str) else len(inputs)), (line, data)
        for index, item in enumerate(data):
            assert item["index"] == index and item["embedding"], item
            assert all(isinstance(x, float) for x in item["embedding"]), item

    listed = {batch.id for batch in client.batches.list()}
    assert {chat_id, embed_id} <= listed, listed
    files = {file.id: file for file in client.files.list()}
    assert {chat_file, embed_file, done.output_file_id} <= files.keys(), files.keys()
    assert files[done.output_file_id].purpose == "batch_output", files[done.output_file_id]

    # The input file outlives its batch until deleted.
    assert client.files.retrieve(chat_file).filename == "chat.jsonl"
    assert client.files.delete(chat_file).deleted
    expect(openai.NotFoundError, lambda: client.files.retrieve(chat_file))
    assert chat_file not in {file.id for file in client.files.list()}
    return [f"chat {CHAT_LINES} lines (993 ran, 7 model_not_allowed)", f"embeddings {EMBED_LINES} lines"]


def cancel_midway(client, team_id):
    """A slow batch cancelled once two lines have run: the rest never run and cost nothing."""
    spent_before, _ = balance(team_id)
    lines = [chat_line(f"slow-{i:03}", "BatchSlow", f"work {i}") for i in range(SLOW_LINES)]
    batch_id = start(client, upload(client, "slow.jsonl", lines), CHAT, "cancel")
    wait_for(client, batch_id, set(), done=lambda b: b.request_counts and b.request_counts.completed >= 2)
    cancelling = client.batches.cancel(batch_id)
    assert cancelling.status in {"cancelling", "cancelled"} and cancelling.cancelling_at, cancelling
    ended = wait_for(client, batch_id, {"cancelled"})
    completed, failed = ended.request_counts.completed, ended.request_counts.failed
    assert completed + failed == SLOW_LINES and failed >= 80, f"most lines should never run: {ended.request_counts}"
    expect(openai.ConflictError, lambda: client.batches.cancel(batch_id))
    output, errors = outcome(client, ended, {line["custom_id"] for line in lines})
    assert set(error_codes(errors).values()) == {"batch_cancelled"}, error_codes(errors)

    spent_after, reserved = balance(team_id)
    costs = [usage["prompt_tokens"] * 10 + usage["completion_tokens"] * 30
             for usage in (line["response"]["body"]["usage"] for line in output.values())]
    assert spent_after - spent_before == sum(costs), (
        f"spend grew {spent_after - spent_before} micro-USD; the {completed} lines that ran cost {sum(costs)}")
    assert spent_after - spent_before <= completed * SLOW_LINE_MAX_MICRO_USD, (spent_before, spent_after)
    assert reserved == 0, f"{reserved} micro-USD still reserved after the batch ended"
    job_id = ended.model_extra["job_id"]
    job = admin("GET", f"/api/jobs/{job_id}")
    assert job["status"] == "cancelled", job
    return [f"cancelled {SLOW_LINES} lines ({completed} ran, {failed} withdrawn, {sum(costs)} micro-USD spent)"]


def bad_files_and_lines(client, other_client):
    """A malformed file fails its batch; bad lines only fail themselves; bad requests raise."""
    lines = [json.dumps(chat_line(f"ok-{i}", "BatchChat", "hi")) for i in range(5)]
    lines[2] = "{not json"
    failed = wait_for(client, start(client, upload(client, "broken.jsonl", lines), CHAT, "broken"), {"failed"})
    first = failed.errors.data[0]
    assert (first.code, first.line) == ("invalid_json_line", 3), failed.errors
    assert failed.failed_at and failed.output_file_id is None, failed

    # On the other team (a $0.10 budget): a wrong url, method GET and a line past the budget.
    lines = [chat_line(f"fine-{i}", "BatchChat", f"fine {i}") for i in range(4)]
    lines.insert(1, chat_line("wrong-url", "BatchChat", "hi", url=EMBEDDINGS))
    lines.insert(3, chat_line("get", "BatchChat", "hi", method="GET"))
    costly = chat_line("over-budget", "gpt-4", "hi")
    costly["body"]["max_tokens"] = 4_000  # 4,000 tokens of gpt-4 output: $0.24
    lines.insert(4, costly)
    batch_id = start(other_client, upload(other_client, "mixed.jsonl", lines), CHAT, "mixed")
    done = wait_for(other_client, batch_id, {"completed"})
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (7, 4, 3), counts
    output, errors = outcome(other_client, done, {line["custom_id"] for line in lines})
    assert error_codes(errors) == {
        "wrong-url": "invalid_url", "get": "invalid_method", "over-budget": "insufficient_quota",
    }, error_codes(errors)
    assert set(output) == {f"fine-{i}" for i in range(4)}, output.keys()

    # Requests the API refuses, and another team's batches and files.
    expect(openai.NotFoundError, lambda: client.batches.create(
        input_file_id="file-00000000000000000000000000000000", endpoint=CHAT, completion_window="24h"))
    file_id = upload(client, "window.jsonl", [chat_line("w", "BatchChat", "hi")])
    expect(openai.BadRequestError, lambda: client.batches.create(
        input_file_id=file_id, endpoint=CHAT, completion_window="48h"))
    expect(openai.NotFoundError, lambda: other_client.batches.retrieve(failed.id))
    expect(openai.NotFoundError, lambda: other_client.batches.cancel(failed.id))
    expect(openai.NotFoundError, lambda: other_client.files.retrieve(file_id))
    assert failed.id not in {batch.id for batch in other_client.batches.list()}
    return [f"malformed file failed at line {first.line}", f"mixed {len(lines)} lines (4 ran, 3 refused)"]


def expect(error_type, request):
    try:
        result = request()
    except error_type:
        return
    raise AssertionError(f"expected {error_type.__name__}, got {result}")


def main() -> int:
    began = time.monotonic()
    admin("POST", "/api/organizations/create", {"organization_id": "org_batch_sdk", "name": "Batch SDK users"})
    for name, models in [
        ("BatchChat", [{"model_name": "gpt-3.5-turbo"}, {"model_name": "gpt-4"}]),
        ("BatchEmbed", [{"model_name": "text-embedding-3-small"}]),
        ("BatchSlow", [{"model_name": "slow-400-gpt-3.5-turbo", "config": SLOW_PRICE}]),
    ]:
        admin("POST", "/api/model-groups/create", {
            "group_name": name, "models": [{**m, "priority": p} for p, m in enumerate(models)],
        })
    key = team("team_batch_sdk", ["BatchChat", "BatchEmbed"], 1_000)
    # Its own team, two calls at a time, so the batch is still running when it is cancelled.
    slow_key = team("team_batch_sdk_slow", ["BatchSlow"], 100)
    admin("PUT", "/api/teams/team_batch_sdk_slow/limits", {"max_concurrent_calls": 2})
    other_key = team("team_batch_sdk_other", ["BatchChat"], 1)

    def client_for(virtual_key):
        return OpenAI(api_key=virtual_key, base_url=f"{BASE_URL}/v1", max_retries=0)

    checked = chat_and_embeddings(client_for(key))
    checked += cancel_midway(client_for(slow_key), "team_batch_sdk_slow")
    checked += bad_files_and_lines(client_for(key), client_for(other_key))
    print(f"openai-batch-sdk-e2e: {'; '.join(checked)}; every custom_id matched "
          f"in {time.monotonic() - began:.1f}s, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
