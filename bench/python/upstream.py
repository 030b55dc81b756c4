"""A minimal OpenAI-compatible upstream in Python (aiohttp) for saasllm-bench's `python` scenario.

POST /v1/chat/completions answers a fixed completion with usage (or, with "stream": true, the
same completion as server-sent events, with a usage chunk when stream_options.include_usage is
set); GET /health answers 200. It does no work per request beyond reading the JSON body, so what
it costs is the Python HTTP stack's own.

Usage: upstream.py --port PORT [--host 127.0.0.1]
"""

import argparse
import json

from aiohttp import web

MODEL = "gpt-4o-mini"
CONTENT = "The benchmark measures what the service adds on top of its upstream."
USAGE = {"prompt_tokens": 14, "completion_tokens": 13, "total_tokens": 27}


def completion(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": CONTENT},
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
    ).encode()


def event(model: str, choices: list, usage: dict | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        chunk["usage"] = usage
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def chat(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": {"message": "malformed JSON"}}, status=400)
    model = body.get("model") or MODEL
    if not body.get("stream"):
        return web.Response(body=completion(model), content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(
        event(model, [{"index": 0, "delta": {"role": "assistant", "content": CONTENT}, "finish_reason": None}])
    )
    await response.write(event(model, [{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    if (body.get("stream_options") or {}).get("include_usage"):
        await response.write(event(model, [], USAGE))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def health(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
