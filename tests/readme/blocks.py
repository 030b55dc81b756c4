"""A Markdown document's runnable steps, and the check of a shown response against a real one.

Steps. The ```bash and ```python blocks, in document order. A bash block is cut after each
`# => ...` comment (the response of the commands above it, shown to the reader), so each comment
is checked against the output of the commands just before it. A ```json block that follows a
runnable block with only blank lines between is the response of that block's last step.

Directives: an HTML comment on its own line right before a block (blank lines between allowed):
  <!-- readme: skip (reason) -->   the block is not run; the reason is required.
  <!-- readme: status NNN -->      the block's last HTTP answer is NNN on purpose (an error shown
                                   deliberately); without it any HTTP status >= 400 fails the block.
A document directive, on a line of its own anywhere in the document (at most one):
  <!-- readme: after ../README.md -->  the document continues another one (the path is relative to
                                   the document, as a link's): its session runs that document's
                                   steps first, checked as usual, then its own, in one stack.
A shown response may start with the status too (`# => 202 {...}`, `# => 409 {"detail": ...}`):
it is checked, and a status >= 400 written there is deliberate as well.

Shown responses are JSON, plus `...`:
  - `...` as a value, or the string "...", matches any value;
  - `...` among an object's members: the real object may have more keys (otherwise the keys are
    exactly those shown); `...` among an array's items: any number of items there (otherwise the
    lengths are equal);
  - in a string, "..." matches any run of characters ("sk-...", "/api/jobs/.../calls").
Volatile values are not compared: a UUID where a UUID is shown, an RFC 3339 time where one is
shown, and the values of keys ending in `_at` or `latency_ms` or named `timestamp` (only their
JSON type is). Everything else must be equal.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from json.decoder import scanstring

RUNNABLE = ("bash", "python")
DIRECTIVE = re.compile(r"^\s*<!--\s*readme:\s*(.*?)\s*-->\s*$")
AFTER = re.compile(r"after(?:\s+(.*))?")
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
SHOWN = re.compile(r"^\s*# =>\s?(.*)$")
STATUS_PREFIX = re.compile(r"^\s*([1-5]\d\d)\s+(?=[\[{\"\d.tfn-])")


class ReadmeError(Exception):
    """The document breaks the rules above (not a failing command)."""


@dataclass
class Step:
    """Code to run in the session, and what its last command is shown to answer."""

    lang: str
    code: str
    line: int
    expected: object = None
    has_expected: bool = False
    status: int | None = None


@dataclass
class Block:
    lang: str
    lines: list[str]
    line: int
    directives: list[str] = field(default_factory=list)


def parse_blocks(text: str, name: str) -> list[Block]:
    """Fenced blocks with the directives written right before them."""
    blocks: list[Block] = []
    pending: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = DIRECTIVE.match(line)
        fence = FENCE.match(line)
        if directive and AFTER.fullmatch(directive.group(1)):
            pass  # a document directive (after_of), not a block's
        elif directive:
            pending.append((i + 1, directive.group(1)))
        elif fence:
            indent, lang = fence.group(1), fence.group(2).lower()
            body: list[str] = []
            i += 1
            while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
                body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
                i += 1
            if i == len(lines):
                raise ReadmeError(f"{name}:{len(lines)}: unclosed code block")
            blocks.append(Block(lang, body, i - len(body), [d for _, d in pending]))
            pending = []
        elif line.strip() and pending:
            at = pending[0][0]
            raise ReadmeError(f"{name}:{at}: a readme directive must come right before a code block")
        i += 1
    if pending:
        raise ReadmeError(f"{name}:{pending[0][0]}: a readme directive with no code block after it")
    return blocks


def after_of(text: str, name: str) -> str | None:
    """The document this one continues (`<!-- readme: after PATH -->`), as written, or None."""
    found: list[tuple[int, str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        directive = DIRECTIVE.match(line)
        m = AFTER.fullmatch(directive.group(1)) if directive else None
        if m:
            if not (m.group(1) or "").strip() or len(m.group(1).split()) != 1:
                raise ReadmeError(f"{name}:{n}: `after` needs one path (after ../README.md)")
            found.append((n, m.group(1).strip()))
    if len(found) > 1:
        raise ReadmeError(f"{name}:{found[1][0]}: a document continues at most one other (`after` twice)")
    return found[0][1] if found else None


def steps_of(text: str, name: str) -> tuple[list[Step], list[str]]:
    """The steps to run, and a line per skipped block (with its reason)."""
    blocks = parse_blocks(text, name)
    steps: list[Step] = []
    skipped: list[str] = []
    for index, block in enumerate(blocks):
        if block.lang not in RUNNABLE:
            if block.directives:
                raise ReadmeError(f"{name}:{block.line}: readme directives apply to bash or python blocks")
            continue
        skip, status = None, None
        for directive in block.directives:
            if m := re.fullmatch(r"skip\s*(?:\((.*)\))?", directive):
                skip = (m.group(1) or "").strip()
            elif m := re.fullmatch(r"status\s+([1-5]\d\d)", directive):
                status = int(m.group(1))
            else:
                raise ReadmeError(
                    f"{name}:{block.line}: unknown readme directive {directive!r} "
                    "(known: skip (reason), status NNN)"
                )
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        shown_json = following if following and following.lang == "json" and adjacent(text, block, following) else None
        if skip is not None:
            if not skip:
                raise ReadmeError(f"{name}:{block.line}: skip needs a reason")
            skipped.append(f"{name}:{block.line}: skipped ({skip})")
            continue
        block_steps = split_block(block, name)
        last = block_steps[-1]
        if shown_json is not None:
            if last.has_expected:
                raise ReadmeError(f"{name}:{shown_json.line}: the block before already ends with a `# =>` response")
            last.expected = parse_shown("\n".join(shown_json.lines), f"{name}:{shown_json.line}")
            last.has_expected = True
        if status is not None:
            if last.status is not None and last.status != status:
                raise ReadmeError(f"{name}:{block.line}: status {status} and the shown {last.status} differ")
            last.status = status
        steps.extend(s for s in block_steps if s.code.strip() or s.has_expected)
    return steps, skipped


def adjacent(text: str, first: Block, second: Block) -> bool:
    """Whether only blank lines separate the end of `first` from `second`."""
    lines = text.splitlines()
    between = lines[first.line + len(first.lines) + 1 : second.line - 1]
    return all(not line.strip() for line in between)


def split_block(block: Block, name: str) -> list[Step]:
    """A block cut after each `# =>` comment, the comment parsed as the response shown."""
    if block.lang != "bash":
        return [Step(block.lang, "\n".join(block.lines) + "\n", block.line + 1)]
    steps: list[Step] = []
    code: list[str] = []
    first = block.line + 1  # the 1-based line of the block's first code line
    start = first
    i = 0
    while i < len(block.lines):
        shown = SHOWN.match(block.lines[i])
        if not shown:
            code.append(block.lines[i])
            i += 1
            continue
        where = f"{name}:{first + i}"
        # The response runs on over the following comment lines until it parses.
        text, j = shown.group(1), i + 1
        while True:
            try:
                status, expected = parse_with_status(text, where)
                break
            except ReadmeError:
                if j < len(block.lines) and block.lines[j].lstrip().startswith("#"):
                    text += "\n" + block.lines[j].lstrip()[1:]
                    j += 1
                else:
                    raise
        if not "".join(code).strip():
            raise ReadmeError(f"{where}: a `# =>` response with no command before it")
        steps.append(Step("bash", "\n".join(code) + "\n", start, expected, True, status))
        code, start, i = [], first + j, j
    steps.append(Step("bash", "\n".join(code) + "\n", start))
    return steps


def parse_with_status(text: str, where: str) -> tuple[int | None, object]:
    m = STATUS_PREFIX.match(text)
    if m:
        return int(m.group(1)), parse_shown(text[m.end():], where)
    return None, parse_shown(text, where)


ELLIPSIS = ...
NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")


def parse_shown(text: str, where: str) -> object:
    """JSON with `...` allowed as a value, an object member or an array item."""
    value, end = _value(text, _skip(text, 0), where)
    if _skip(text, end) != len(text):
        raise ReadmeError(f"{where}: unexpected text after the shown response: {text[end:].strip()[:40]!r}")
    return value


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _value(text: str, i: int, where: str) -> tuple[object, int]:
    if text.startswith("...", i):
        return ELLIPSIS, i + 3
    if i >= len(text):
        raise ReadmeError(f"{where}: the shown response ends early")
    c = text[i]
    if c == "{":
        return _object(text, i + 1, where)
    if c == "[":
        return _array(text, i + 1, where)
    if c == '"':
        try:
            return scanstring(text, i + 1)
        except json.JSONDecodeError as error:
            raise ReadmeError(f"{where}: {error}") from None
    for word, value in (("true", True), ("false", False), ("null", None)):
        if text.startswith(word, i):
            return value, i + len(word)
    m = NUMBER.match(text, i)
    if m:
        return json.loads(m.group(0)), m.end()
    raise ReadmeError(f"{where}: not JSON at {text[i:i + 30]!r}")


def _object(text: str, i: int, where: str) -> tuple[dict, int]:
    result: dict = {}
    i = _skip(text, i)
    if text.startswith("}", i):
        return result, i + 1
    while True:
        i = _skip(text, i)
        if text.startswith("...", i):
            result[ELLIPSIS] = ELLIPSIS
            i += 3
        else:
            key, i = _value(text, i, where)
            if not isinstance(key, str):
                raise ReadmeError(f"{where}: an object key must be a string")
            i = _skip(text, i)
            if not text.startswith(":", i):
                raise ReadmeError(f"{where}: expected ':' after {key!r}")
            result[key], i = _value(text, _skip(text, i + 1), where)
        ended, i = _separator(text, i, "}", where)
        if ended:
            return result, i


def _array(text: str, i: int, where: str) -> tuple[list, int]:
    result: list = []
    i = _skip(text, i)
    if text.startswith("]", i):
        return result, i + 1
    while True:
        item, i = _value(text, _skip(text, i), where)
        result.append(item)
        ended, i = _separator(text, i, "]", where)
        if ended:
            return result, i



def _separator(text: str, i: int, close: str, where: str) -> tuple[bool, int]:
    """After an item of an object or an array: (True, the index past `close`) at its end, or
    (False, the index past the ',') when another item follows."""
    i = _skip(text, i)
    if text.startswith(",", i):
        return False, i + 1
    if text.startswith(close, i):
        return True, i + 1
    raise ReadmeError(f"{where}: expected ',' or '{close}' at {text[i:i + 30]!r}")


def last_json(output: str) -> tuple[bool, object]:
    """The last JSON value printed: values are read where a line, an object or an array starts."""
    decoder = json.JSONDecoder()
    found, last, i = False, None, 0
    line_start = True
    while i < len(output):
        c = output[i]
        if c == "\n":
            line_start, i = True, i + 1
            continue
        if c in "{[" or (line_start and not c.isspace()):
            try:
                last, i = decoder.raw_decode(output, i)
                found, line_start = True, False
                continue
            except json.JSONDecodeError:
                pass
        if not c.isspace():
            line_start = False
        i += 1
    return found, last


UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def volatile_key(key: str) -> bool:
    return key.endswith(("_at", "latency_ms")) or key == "timestamp"


def json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object", type(None): "null"}[type(value)]


def mismatches(shown: object, real: object, path: str = "$") -> list[str]:
    """Where `real` differs from `shown` under the rules above (empty: it matches)."""
    if shown is ELLIPSIS or shown == "...":
        return []
    key = path.rsplit(".", 1)[-1]
    if volatile_key(key):
        return [] if json_type(shown) == json_type(real) else [f"{path}: {json_type(real)}, shown {json_type(shown)}"]
    if isinstance(shown, str) and isinstance(real, str):
        if (UUID.match(shown) and UUID.match(real)) or (TIME.match(shown) and TIME.match(real)):
            return []
        if "..." in shown:
            pattern = ".*".join(re.escape(part) for part in shown.split("..."))
            return [] if re.fullmatch(pattern, real, re.S) else [f"{path}: {real!r}, shown {shown!r}"]
    if isinstance(shown, dict):
        if not isinstance(real, dict):
            return [f"{path}: {json_type(real)}, shown an object"]
        problems = [f"{path}.{k}: missing" for k in shown if k is not ELLIPSIS and k not in real]
        if ELLIPSIS not in shown:
            problems += [f"{path}.{k}: not shown" for k in real if k not in shown]
        for k, v in shown.items():
            if k is not ELLIPSIS and k in real:
                problems += mismatches(v, real[k], f"{path}.{k}")
        return problems
    if isinstance(shown, list):
        if not isinstance(real, list):
            return [f"{path}: {json_type(real)}, shown an array"]
        if ELLIPSIS in shown:
            cut = shown.index(ELLIPSIS)
            head, tail = shown[:cut], shown[cut + 1:]
            if len(real) < len(head) + len(tail):
                return [f"{path}: {len(real)} items, shown at least {len(head) + len(tail)}"]
            pairs = list(zip(head, real)) + list(zip(tail, real[len(real) - len(tail):]))
        else:
            if len(real) != len(shown):
                return [f"{path}: {len(real)} items, shown {len(shown)}"]
            pairs = list(zip(shown, real))
        problems = []
        for n, (s, r) in enumerate(pairs):
            problems += mismatches(s, r, f"{path}[{n}]")
        return problems
    if json_type(shown) != json_type(real) or shown != real:
        return [f"{path}: {json.dumps(real)}, shown {json.dumps(shown)}"]
    return []
