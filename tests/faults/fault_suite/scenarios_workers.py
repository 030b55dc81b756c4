"""Faults of the workers: kill -9, SIGTERM, scale-out, crash points."""

import os
import random
import signal
import time

from .common import HEAL_BOUND_SECS, SHUTDOWN_TIMEOUT_SECS
from .invariants import finish_scenario, no_spurious_repush
from .load import Load
from .stack import Stack


def scenario_kill9(cluster, result):
    """kill -9 a worker at random moments while calls are in flight (upstream slow-500); a
    replacement starts at once. Every call ends within the lease + reconciler bound."""
    stack = Stack(cluster, "kill9", workers=2, concurrency=8, model="slow-500")
    stack.start()
    load = Load(stack, threads=3, calls_per_job=4)
    load.start()
    time.sleep(2)
    kills, in_flight_killed = 0, 0
    end = time.time() + 12
    last_kill = None
    while True:
        victim = random.choice(stack.live_workers())
        in_flight_killed += stack.running_on(victim)
        victim.signal(signal.SIGKILL)
        victim.wait(5)
        last_kill = time.time()
        kills += 1
        stack.start_worker()
        if time.time() >= end:
            break
        time.sleep(random.uniform(0.7, 2.0))
    load.stop()
    result.figures.update({"kills": kills, "calls_running_on_killed": in_flight_killed,
                           "heal_bound_s": HEAL_BOUND_SECS})
    finish_scenario(stack, load, result, since=last_kill)
    drain = result.figures["drain_s"]
    result.check(drain is not None and drain <= HEAL_BOUND_SECS,
                 f"calls took {drain} s after the last kill to finish (bound {HEAL_BOUND_SECS} s)")
    result.check(in_flight_killed > 0, "no call was in flight at any kill (the check proved nothing)")
    return stack


def scenario_sigterm(cluster, result):
    """SIGTERM a worker with calls in flight: it takes no new call, finishes its calls within
    SHUTDOWN_TIMEOUT_SECS and exits 0; nothing is lost."""
    stack = Stack(cluster, "sigterm", workers=3, concurrency=8, model="slow-500")
    stack.start()
    load = Load(stack, threads=4, calls_per_job=4)
    load.start()
    time.sleep(4)
    victim, in_flight = None, 0
    for _ in range(50):
        counts = [(stack.running_on(w), w) for w in stack.live_workers()]
        in_flight, victim = max(counts, key=lambda c: c[0])
        if in_flight > 0:
            break
        time.sleep(0.05)
    signalled = time.time()
    victim.signal(signal.SIGTERM)
    code = victim.wait(SHUTDOWN_TIMEOUT_SECS + 10)
    exited = time.time()
    time.sleep(3)
    load.stop()
    result.figures.update({"in_flight_at_sigterm": in_flight, "exit_code": code,
                           "exit_after_s": round(exited - signalled, 2)})
    result.check(in_flight > 0, "the worker had no call in flight at SIGTERM")
    result.check(code == 0, f"worker exit code {code}, expected 0")
    result.check(exited - signalled <= SHUTDOWN_TIMEOUT_SECS + 2,
                 f"worker took {exited - signalled:.1f} s to exit (timeout {SHUTDOWN_TIMEOUT_SECS} s)")
    finish_scenario(stack, load, result)
    (late,), = stack.sql(
        f"select count(*) from llm_calls where worker_id like '{victim.name}-%'"
        f" and started_at > to_timestamp({signalled + 0.5})")
    (finished_by_victim,), = stack.sql(
        f"select count(*) from llm_calls where worker_id like '{victim.name}-%'"
        f" and finished_at >= to_timestamp({signalled})")
    result.figures.update({"claimed_after_sigterm": int(late),
                           "finished_after_sigterm": int(finished_by_victim)})
    result.check(int(late) == 0, f"the worker claimed {late} calls after SIGTERM")
    return stack


def scenario_scale_out(cluster, result):
    """Start a 3rd and a 4th worker mid-load: no call runs on two workers at once (checked at the
    upstream from the x-saasllm-call-id intervals) and the new workers take work."""
    stack = Stack(cluster, "scale_out", workers=2, concurrency=4, model="slow-500")
    stack.start()
    load = Load(stack, threads=4, calls_per_job=5, pause=0)
    load.start()
    time.sleep(3)
    third = stack.start_worker()
    time.sleep(3)
    fourth = stack.start_worker()
    time.sleep(5)
    load.stop()
    finish_scenario(stack, load, result)
    per_worker = dict(stack.sql(
        "select split_part(worker_id, '-', 1), count(*) from llm_calls"
        " where status = 'succeeded' group by 1 order by 1"))
    result.figures["calls_per_worker"] = per_worker
    for w in (third, fourth):
        result.check(int(per_worker.get(w.name, 0)) > 0, f"{w.name} took no call")
    no_spurious_repush(result)
    return stack


def scenario_crash_points(cluster, result):
    """The worker aborts (std::process::abort) at random right after claiming a batch of calls
    (before any starts), between the upstream answer and the group commit of results, and right
    after that commit (SAASLLM_FAULT_CRASH); crashed workers are restarted. Exactly one result
    per call, one charge per job."""
    spec = os.environ.get("FAULTS_CRASH_SPEC",
                          "after_claim:0.1,after_upstream:0.2,after_commit:0.2")
    stack = Stack(cluster, "crash_points", workers=2, concurrency=2, model="slow-500",
                  worker_env={"SAASLLM_FAULT_CRASH": spec}, supervise=True)
    stack.start()
    load = Load(stack, threads=3, calls_per_job=3, pause=0.2)
    load.start()
    end, hard_end = time.time() + 12, time.time() + 25
    while time.time() < hard_end:
        stack.tick()
        points = crash_counts(stack)
        if time.time() >= end and all(points.values()):
            break
        time.sleep(0.1)
    load.stop()
    finish_scenario(stack, load, result)
    points = crash_counts(stack)
    aborted = sum(1 for _, code in stack.exits if code == -signal.SIGABRT)
    result.figures.update({"crash_spec": spec, "crashes": aborted, "restarts": stack.restarts,
                           **{f"crash_{k}": n for k, n in points.items()}})
    for point, n in points.items():
        result.check(n > 0, f"no crash at {point} happened (the check proved nothing)")
    odd = [(n, c) for n, c in stack.exits if c != -signal.SIGABRT]
    result.check(not odd, f"workers exited other than by the crash points: {odd}")
    return stack


def crash_counts(stack):
    counts = {"after_claim": 0, "after_upstream": 0, "after_commit": 0}
    for w in stack.workers:
        try:
            text = w.log_path.read_text(errors="replace")
        except OSError:
            continue
        for point in counts:
            counts[point] += text.count(f"aborting at {point}")
    return counts
