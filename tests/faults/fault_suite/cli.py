"""The command line: choosing scenarios, running them, the summary."""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .cluster import Cluster
from .common import BIN, SHUTDOWN_TIMEOUT_SECS, T0, say
from .invariants import Result
from .processes import Proc, link_binaries, stop_all_processes
from .scenarios_budget import scenario_api_kill9_budget
from .scenarios_overload import scenario_overload
from .scenarios_services import scenario_pg_restart, scenario_redis_restart
from .scenarios_workers import scenario_crash_points, scenario_kill9, scenario_scale_out, scenario_sigterm

# In the order they run; their numbers here are the numbers the command line accepts.
SCENARIOS = [
    ("kill9", scenario_kill9),
    ("redis_restart", scenario_redis_restart),
    ("pg_restart", scenario_pg_restart),
    ("sigterm", scenario_sigterm),
    ("scale_out", scenario_scale_out),
    ("crash_points", scenario_crash_points),
    ("overload", scenario_overload),
    ("api_kill9_budget", scenario_api_kill9_budget),
]


def run_scenario(cluster, name, function):
    result = Result(name)
    started = time.time()
    say(f"=== {name}: {function.__doc__.split(chr(10))[0].strip()}")
    try:
        cluster.ensure_up()
        function(cluster, result)
    except Exception as e:  # noqa: BLE001 - one scenario's crash is its failure, not the suite's
        result.violations.append(f"scenario error: {e!r}")
        traceback.print_exc()
    finally:
        stop_scenario_processes(name, show_logs=not result.passed)
    result.figures["scenario_s"] = round(time.time() - started, 1)
    report_scenario(result)
    return result


def stop_scenario_processes(name, show_logs):
    """Stops the scenario's processes, first showing the end of the API's and the first workers'
    logs when it failed."""
    if show_logs:
        for proc in Proc.registry:
            if proc.log_path.parent.name == name and proc.name in ("api",) + tuple(
                    f"w{i}" for i in range(1, 4)):
                say(f"--- last lines of {proc.log_path}:\n{proc.tail(8)}")
    for proc in Proc.registry:
        if proc.log_path.parent.name == name:
            proc.stop(timeout=SHUTDOWN_TIMEOUT_SECS + 5)


def report_scenario(result):
    name, f = result.name, result.figures
    say(f"{name}: {'PASS' if result.passed else 'FAIL'} | calls accepted {f.get('accepted')},"
        f" finished {f.get('finished')}, duplicates {f.get('duplicates')},"
        f" double charges {f.get('double_charges')}, time to drain {f.get('drain_s')} s")
    extra = {k: val for k, val in f.items() if k not in (
        "accepted", "finished", "duplicates", "double_charges", "drain_s")}
    say(f"{name}: {json.dumps(extra)}")
    for violation in result.violations:
        say(f"{name}: VIOLATION {violation}")


def parse_args():
    parser = argparse.ArgumentParser(description="SaaS LiteLLM fault-tolerance suite")
    parser.add_argument("scenarios", nargs="*", help="scenario names or numbers (default: all)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--json", help="write the figures of every scenario to this file")
    return parser.parse_args()


def choose_scenarios(wanted_names):
    """The scenarios named (by name or number), all when none is; None if one is unknown."""
    chosen = []
    for wanted in wanted_names or [n for n, _ in SCENARIOS]:
        match = [s for i, s in enumerate(SCENARIOS, 1) if wanted in (s[0], str(i))]
        if not match:
            print(f"unknown scenario '{wanted}'; --list shows them", file=sys.stderr)
            return None
        chosen.append(match[0])
    return chosen


def binaries_present():
    for binary in ("saasllm-api", "saasllm-worker", "fake-llm"):
        if not (BIN / binary).exists():
            print(f"{BIN / binary} is missing; run cargo build first", file=sys.stderr)
            return False
    return True


def run_all(chosen, keep):
    """Runs the chosen scenarios on one private PostgreSQL and Redis, and cleans up after them
    (also when interrupted)."""
    base = os.environ.get("FAULTS_TMPDIR")
    tmp = Path(base) if base else Path(tempfile.mkdtemp(prefix="saasllm-faults-"))
    Proc.pid_file = tmp / "pids"
    cluster = Cluster(tmp)

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    results = []
    try:
        link_binaries(tmp)
        cluster.start()
        for name, function in chosen:
            results.append(run_scenario(cluster, name, function))
    finally:
        stop_all_processes()
        cluster.stop_pg()
        if keep:
            say(f"kept {tmp}")
        elif not base:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def print_summary(results):
    print()
    print(f"{'scenario':<14} {'result':<6} {'accepted':>8} {'finished':>8} {'dupl.':>5} "
          f"{'dbl.chg':>7} {'drain s':>7} {'total s':>7}")
    for r in results:
        f = r.figures
        print(f"{r.name:<14} {'PASS' if r.passed else 'FAIL':<6} {f.get('accepted', '-')!s:>8} "
              f"{f.get('finished', '-')!s:>8} {f.get('duplicates', '-')!s:>5} "
              f"{f.get('double_charges', '-')!s:>7} {f.get('drain_s', '-')!s:>7} {f.get('scenario_s')!s:>7}")
    print(f"total {time.time() - T0:.0f} s")


def main():
    args = parse_args()
    if args.list:
        for i, (name, function) in enumerate(SCENARIOS, 1):
            print(f"{i}. {name}: {' '.join(function.__doc__.split())}")
        return 0
    chosen = choose_scenarios(args.scenarios)
    if chosen is None or not binaries_present():
        return 2
    results = run_all(chosen, args.keep)
    print_summary(results)
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"scenario": r.name, "passed": r.passed, "figures": r.figures,
              "violations": r.violations} for r in results], indent=2))
    failed = [r.name for r in results if not r.passed]
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    print("all scenarios passed")
    return 0
