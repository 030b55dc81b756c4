"""Runs the bash and python blocks of Markdown documents, in order, against a fresh stack.

    run_readme.py [-v] DOC [DOC...]

Each document gets its own stack: the fake upstream (`fake-llm`) and `saasllm-api` (with its
embedded workers) from README_BIN_DIR (default target/debug), on free ports, with a brand-new
database (README_DB_PREFIX + a number; dropped afterwards) and its own Redis queue name. The
admin key is `admin-secret`, the one the README's quickstart starts the service with, and the
README's address `localhost:8000` is rewritten to the stack's in every block.

The blocks of a document run in ONE bash session, as a reader pasting them into one terminal
would: variables and the working directory carry over from block to block. The session starts
with `set -euo pipefail` and a `curl` function that calls the real curl and fails (exit 22,
body and status on stderr) on any HTTP status >= 400 the document does not show on purpose, so a
4xx can no longer slip by as a printed body and exit status 0. Python blocks run with `python3`
(target/venv-e2e's, first on PATH) from inside the same session, so they see its exported
variables. What is run, skipped and checked is decided by tests/readme/blocks.py (its docstring
has the rules). A document that continues another (`<!-- readme: after ../README.md -->`, as a
docs page continues the README's quickstart) runs that one's steps first, in the same session. The first failing step stops the document, with its code, output, the
difference from the shown response and the API's last log lines.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blocks import ReadmeError, Step, after_of, last_json, mismatches, steps_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "admin-secret"
STEP_TIMEOUT_SECS = 180
DONE = "@@readme-step-done@@"

PRELUDE = r"""
set -euo pipefail
# curl, failing on an HTTP error the document does not show on purpose (README_EXPECT_STATUS).
curl() {
  local headers body rc=0 status url="" own_output=0 arg
  for arg in "$@"; do
    case $arg in
      http://* | https://*) url=$arg ;;
      -o | --output | -O | --remote-name | -o?* | --output=*) own_output=1 ;;
    esac
  done
  headers=$(mktemp "$README_STATE/headers.XXXXXX")
  body=$(mktemp "$README_STATE/body.XXXXXX")
  if [ "$own_output" = 1 ]; then
    command curl --dump-header "$headers" "$@" || rc=$?
  else
    command curl --dump-header "$headers" --output "$body" "$@" || rc=$?
    cat "$body"
  fi
  status=$(sed -n 's/^HTTP\/[0-9.]* \([0-9][0-9][0-9]\).*/\1/p' "$headers" | tail -n 1)
  [ -z "$status" ] || echo "$status" >>"$README_STATE/statuses"
  if [ "$rc" != 0 ]; then
    echo "curl: exit status $rc for $url" >&2
  elif [ -n "$status" ] && [ "$status" -ge 400 ] && [ "$status" != "${README_EXPECT_STATUS:-}" ]; then
    echo "curl: HTTP $status from $url: $(head -c 2000 "$body")" >&2
    rc=22
  fi
  rm -f "$headers" "$body"
  return "$rc"
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """fake-llm and saasllm-api with a fresh database, as scripts/e2e starts them."""

    def __init__(self, database: str, work: Path):
        self.database, self.work = database, work
        self.queue = f"readme-{os.getpid()}-{database.rsplit('_', 1)[-1]}"
        self.procs: list[subprocess.Popen] = []
        self.port = free_port()
        self.api_log = work / "api.log"

    def start(self) -> None:
        bin_dir = Path(os.environ.get("README_BIN_DIR", ROOT / "target" / "debug"))
        llm_port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SAASLLM_", "OPENAI_"))}
        base["NO_COLOR"] = "1"
        self._spawn([bin_dir / "fake-llm"], {**base, "FAKE_LLM_ADDR": f"127.0.0.1:{llm_port}"}, "fake-llm.log")
        self._spawn([bin_dir / "saasllm-api"], {
            **base,
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{self.database}",
            "BIND_ADDR": f"127.0.0.1:{self.port}",
            "ADMIN_API_KEY": ADMIN_KEY,
            "LLM_BASE_URL": f"http://127.0.0.1:{llm_port}",
            "QUEUE_NAME": self.queue,
        }, "api.log")
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not start; api log:\n{self.log_tail()}")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, argv: list, env: dict, log: str) -> None:
        with open(self.work / log, "wb") as out:
            self.procs.append(subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT))

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.api_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        subprocess.run(
            ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-c",
             f"drop database if exists {self.database} with (force)"],
            env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"},
            stdout=subprocess.DEVNULL, check=False,
        )
        if shutil.which("redis-cli"):
            keys = subprocess.run(["redis-cli", "--scan", "--pattern", f"{{{self.queue}}}*"],
                                  capture_output=True, text=True, check=False).stdout.split()
            if keys:
                subprocess.run(["redis-cli", "del", *keys], stdout=subprocess.DEVNULL, check=False)


class Session:
    """One bash process that runs the steps one after the other (as one terminal would)."""

    def __init__(self, work: Path, venv_bin: Path):
        self.state = work / "session"
        self.state.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SAASLLM_", "OPENAI_", "README_"))}
        env.update(README_STATE=str(self.state), NO_COLOR="1", PATH=f"{venv_bin}:{env.get('PATH', '')}")
        (self.state / "prelude.sh").write_text(PRELUDE)
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], cwd=ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.state / "shell.err", "w"),
            start_new_session=True,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._send(f"source {self.state / 'prelude.sh'}\necho {DONE}\n")
        self._wait(30)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _send(self, text: str) -> None:
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def _wait(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return "timeout"
            if line is None:
                return "exited"
            if line == DONE:
                return "done"

    def run(self, n: int, step: Step, code: str) -> tuple[str, str, str, list[str]]:
        """Runs a step; (outcome, stdout, stderr, HTTP statuses its curl calls got)."""
        suffix = "py" if step.lang == "python" else "sh"
        source = self.state / f"step-{n}.{suffix}"
        source.write_text(code)
        out, err, statuses = (self.state / f"step-{n}.{x}" for x in ("out", "err", "statuses"))
        command = f"python3 {source}" if step.lang == "python" else f"source {source}"
        expect = step.status if step.status and step.status >= 400 else ""
        self._send(
            f"README_EXPECT_STATUS={expect}; : >{self.state / 'statuses'}\n"
            f"{command} </dev/null >{out} 2>{err}\n"
            f"cp {self.state / 'statuses'} {statuses}; echo {DONE}\n"
        )
        outcome = self._wait(STEP_TIMEOUT_SECS)
        read = lambda p: p.read_text(errors="replace") if p.exists() else ""  # noqa: E731
        if outcome == "exited":
            # The step made the shell exit (set -e): the statuses are still in the shared file.
            statuses = self.state / "statuses"
        return outcome, read(out), read(err), read(statuses).split()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.proc.wait()


def indent(text: str, limit: int = 60) -> str:
    lines = text.rstrip("\n").splitlines() or ["(nothing)"]
    if len(lines) > limit:
        lines = lines[:limit] + [f"... ({len(lines) - limit} more lines)"]
    return "\n".join("    " + line for line in lines)


def display(doc: Path) -> str:
    return str(doc.resolve().relative_to(ROOT)) if doc.resolve().is_relative_to(ROOT) else str(doc)


def chain_of(doc: Path) -> list[Path]:
    """The documents whose steps run for `doc`: those it continues (the first first), then itself."""
    chain = [doc.resolve()]
    while (after := after_of(chain[0].read_text(), display(chain[0]))) is not None:
        first = (chain[0].parent / after).resolve()
        if first in chain:
            raise ReadmeError(f"{display(chain[0])}: `after {after}` makes a cycle")
        if not first.is_file():
            raise ReadmeError(f"{display(chain[0])}: `after {after}`: no such document")
        chain.insert(0, first)
    return chain


def run_document(doc: Path, database: str, venv_bin: Path, verbose: bool) -> bool:
    name = display(doc)
    chain = chain_of(doc)
    runs = [(display(d), steps_of(d.read_text(), display(d))[0]) for d in chain[:-1]]
    steps, skipped = steps_of(doc.read_text(), name)
    runs.append((name, steps))
    for line in skipped:
        print(line)
    work = Path(tempfile.mkdtemp(prefix="saasllm-readme-"))
    stack = Stack(database, work)
    session = None
    try:
        stack.start()
        session = Session(work, venv_bin)
        plan = [(source, step) for source, source_steps in runs for step in source_steps]
        for n, (source, step) in enumerate(plan):
            where = f"{source}:{step.line}" + ("" if source == name else f" (before {name})")
            code = step.code.replace("localhost:8000", f"127.0.0.1:{stack.port}")
            started = time.monotonic()
            outcome, out, err, statuses = session.run(n, step, code)
            problems = []
            if outcome != "done":
                problems.append("the step timed out" if outcome == "timeout" else "the step failed (the shell exited)")
            if not problems and step.status is not None and (statuses or ["none"])[-1] != str(step.status):
                problems.append(f"last HTTP status {(statuses or ['none'])[-1]}, shown {step.status}")
            if not problems and step.has_expected:
                found, real = last_json(out)
                if not found:
                    problems.append("the step printed no JSON, but a response is shown")
                else:
                    problems += [f"response differs at {p}" for p in mismatches(step.expected, real)]
            took = time.monotonic() - started
            if problems:
                print(f"FAIL {where} ({took:.1f} s)")
                print("  code:\n" + indent(step.code))
                print("  stdout:\n" + indent(out))
                print("  stderr:\n" + indent(err))
                for problem in problems:
                    print(f"  {problem}")
                print("  api log (tail):\n" + indent(stack.log_tail()))
                return False
            checked = " (response checked)" if step.has_expected else ""
            print(f"ok   {where}{checked} ({took:.1f} s)")
            if verbose:
                print(indent(out))
        shown = sum(step.has_expected for step in steps)
        before = "".join(f", after {source}'s {len(s)}" for source, s in runs[:-1])
        print(f"{name}: {len(steps)} steps passed ({shown} responses checked){before}, "
              f"{len(skipped)} blocks skipped")
        return True
    finally:
        if session:
            session.close()
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    docs = [Path(a) for a in argv if a != "-v"]
    if not docs:
        print(__doc__)
        return 2
    prefix = os.environ.get("README_DB_PREFIX", f"saasllm_readme_{os.getpid()}")
    venv_bin = Path(sys.executable).parent
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ok = True
    for n, doc in enumerate(docs):
        try:
            ok = run_document(doc, f"{prefix}_{n}", venv_bin, verbose) and ok
        except ReadmeError as error:
            print(f"FAIL {error}")
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
