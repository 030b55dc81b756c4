"""The API's own description (/openapi.json): its operations with the victim's objects in their
paths, valid bodies to make hostile one field at a time, and what each field allows."""

import uuid

from .client import CANARY, fail
from .tenants import batch_body


def operations(document, ids):
    """The operations of the document, with their path parameters filled with the victim's objects."""
    values = {"team_id": ids["team"], "job_id": ids["job"], "call_id": ids["call"],
              "organization_id": ids["org"], "group_name": ids["group"],
              "admin_key_id": ids["admin_key"], "file_id": ids["file"], "batch_id": ids["batch"]}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            concrete = path
            for name, value in values.items():
                concrete = concrete.replace("{" + name + "}", value)
            if "{" in concrete:
                fail(f"{method} {path}: no value for a path parameter; add it to the suite")
                continue
            yield method.upper(), path, concrete, operation


def resolve(document, schema):
    while isinstance(schema, dict) and "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema or {}


# Valid bodies per operation (path template), so that one field at a time can be made hostile.
def base_bodies(ids):
    fresh = uuid.uuid4().hex[:8]
    message = [{"role": "user", "content": "hello"}]
    return {
        ("POST", "/api/organizations/create"): {"organization_id": f"org_{fresh}", "name": "Org"},
        ("POST", "/api/model-groups/create"): {"group_name": f"G_{fresh}", "models": [{"model_name": "gpt-4o", "priority": 0}]},
        ("PUT", "/api/model-groups/{group_name}/models"): {"models": [{"model_name": "gpt-4o-mini", "priority": 0}]},
        ("POST", "/api/teams/create"): {"organization_id": ids["org_b"], "team_id": f"t_{fresh}", "credits_allocated": 1},
        ("PUT", "/api/teams/{team_id}/limits"): {"max_concurrent_calls": 10},
        ("PUT", "/api/teams/{team_id}/alerts"): {"url": "https://hooks.example.com/alerts", "credits_below": 5,
                                                 "budget_spend_pct": 80},
        ("PUT", "/api/teams/{team_id}/refills"): {"credit_grant": {"credits": 10, "period": "1mo"},
                                                  "budget_duration": "30d"},
        ("POST", "/api/admin-keys/create"): {"name": f"k_{fresh}", "role": "viewer"},
        ("PUT", "/api/teams/{team_id}/model-groups"): [ids["group"]],
        ("POST", "/api/credits/teams/{team_id}/add"): {"credits_amount": 1, "reason": "fuzz"},
        ("POST", "/api/credits/teams/{team_id}/check"): {"credits_required": 1},
        ("POST", "/api/jobs/create"): {"team_id": ids["team"], "job_type": "fuzz", "metadata": {"k": "v"}},
        ("POST", "/api/jobs/{job_id}/llm-call"): {"model_group": ids["group"], "messages": message, "async": True},
        ("POST", "/api/jobs/{job_id}/llm-calls"): {"calls": [{"model_group": ids["group"], "messages": message}]},
        ("POST", "/api/jobs/{job_id}/complete"): {"status": "completed"},
        ("POST", "/v1/chat/completions"): {"model": "gpt-4o-mini", "messages": message, "max_tokens": 5},
        ("POST", "/v1/embeddings"): {"model": "gpt-4o-mini", "input": ["hello", "world"]},
        ("POST", "/v1/batches"): batch_body(ids["file"]),
    }


def leaks(response):
    return CANARY in response.text


def admin_only(operation):
    security = operation.get("security") or [{}]
    return "admin_key" in security[0]


VICTIM_PARAMETERS = ("{team_id}", "{job_id}", "{call_id}", "{organization_id}", "{file_id}", "{batch_id}")


HOSTILE = [
    ("NUL", "\u0000"), ("NUL inside", "a\u0000b"), ("huge string", "x" * 300_000),
    ("negative", -1), ("zero", 0), ("i64 min", -(2**63)), ("i64 max", 2**63 - 1), ("u64 overflow", 2**64 + 1),
    ("float overflow", 1e308), ("fraction", 0.5), ("empty string", ""), ("array", []), ("object", {}),
    ("bool", True), ("null", None),
]


def violates(document, schema, value):
    """Whether `value` breaks what the document says of the field (type and bounds)."""
    schema = resolve(document, schema)
    if "oneOf" in schema or "anyOf" in schema:
        options = schema.get("oneOf") or schema.get("anyOf")
        return all(violates(document, option, value) for option in options)
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds] if kinds else []
    if not kinds:
        return isinstance(value, str) and "\u0000" in value
    checks = {
        "null": lambda v: v is None,
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "string": lambda v: isinstance(v, str),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    if not any(checks[k](value) for k in kinds if k in checks):
        return True
    if isinstance(value, str):
        return ("\u0000" in value or len(value) < schema.get("minLength", 0)
                or len(value) > schema.get("maxLength", 10**9))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "integer" in kinds and ("number" not in kinds) and not float(value).is_integer():
            return True
        return (value < schema.get("minimum", -(2**63)) or value > schema.get("maximum", 2**63 - 1)
                or value <= schema.get("exclusiveMinimum", float("-inf")))
    if isinstance(value, list):
        return len(value) < schema.get("minItems", 0)
    return False


# The rules of the OpenAI bodies that their document states in words (these bodies pass other
# parameters through to the upstream, so only the fields the service reads are listed).
OPENAI_FIELDS = {
    "/v1/chat/completions": {
        "model": {"type": "string", "minLength": 1}, "max_tokens": {"type": "integer", "minimum": 1},
        "n": {"type": "integer", "minimum": 1}, "messages": {"type": "array", "minItems": 1}},
    "/v1/embeddings": {
        "model": {"type": "string", "minLength": 1},
        "input": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1}]},
        "dimensions": {"type": ["integer", "null"], "minimum": 1},
        "encoding_format": {"type": ["string", "null"]}},
}
