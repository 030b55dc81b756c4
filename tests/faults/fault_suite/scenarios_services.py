"""Faults of the services the workers and the API depend on: Redis and PostgreSQL restarts."""

import time
from collections import defaultdict

from .common import say
from .invariants import finish_scenario
from .load import Load
from .stack import Stack


def scenario_redis_restart(cluster, result):
    """Redis killed and restarted empty mid-load: submissions while it is down get 503, and every
    accepted call still finishes (the reconciler re-pushes what Redis lost)."""
    # Fewer slots than the load needs, so that a backlog sits in Redis when it dies.
    stack = Stack(cluster, "redis_restart", workers=2, concurrency=2, model="slow-500")
    stack.start()
    load = Load(stack, threads=3, calls_per_job=4)
    load.start()
    time.sleep(4)
    (queued_before,), = stack.sql("select count(*) from llm_calls where status = 'queued'")
    result.figures["queued_at_kill"] = int(queued_before)
    result.check(int(queued_before) > 0, "nothing was queued when Redis died (the check proved nothing)")
    cluster.kill_redis()
    down = time.time()
    time.sleep(3)
    up = time.time()
    cluster.start_redis()
    say(f"Redis down {up - down:.1f} s ({queued_before} calls queued at the kill)")
    time.sleep(4)
    load.stop()
    during = [r for r in load.of("call") if r["t0"] >= down and r["t1"] <= up]
    ok = sum(1 for r in during if 200 <= r["status"] < 300)
    unavailable = sum(1 for r in during if r["status"] == 503)
    other = len(during) - ok - unavailable
    result.figures.update({"redis_down_s": round(up - down, 1), "during_down": len(during),
                           "during_down_503": unavailable, "during_down_2xx": ok,
                           "during_down_other": other,
                           "during_down_max_ms": round(max(
                               [(r["t1"] - r["t0"]) * 1000 for r in during], default=0))})
    result.check(len(during) > 0, "no submission fell inside the Redis outage")
    result.check(ok == 0, f"{ok} submissions got 2xx while Redis was down")
    result.check(other == 0, f"{other} submissions got neither 2xx nor 503 while Redis was down")
    finish_scenario(stack, load, result)
    return stack


def scenario_pg_restart(cluster, result):
    """PostgreSQL restarted mid-load (pg_ctl restart -m fast, then stop -m immediate + start):
    no 2xx for uncommitted work, API and workers reconnect by themselves, the queue drains."""
    stack = Stack(cluster, "pg_restart", workers=2, concurrency=8, model="slow-500")
    stack.start()
    load = Load(stack, threads=3, calls_per_job=4)
    load.start()
    time.sleep(4)
    t = time.time()
    cluster.pg_ctl("restart", "-m", "fast", "-w", "-t", "60")
    windows = [(t, time.time())]
    say(f"PostgreSQL restarted (-m fast) in {time.time() - t:.1f} s")
    time.sleep(3)
    down = time.time()
    cluster.pg_ctl("stop", "-m", "immediate", "-w", "-t", "60")
    time.sleep(2)
    cluster.pg_ctl("start", "-w", "-t", "60")
    up = time.time()
    windows.append((down, up))
    say(f"PostgreSQL crashed (-m immediate) and back after {up - down:.1f} s")
    healthy = stack.wait_healthy(30)
    result.figures["api_healthy_after_s"] = round(healthy - up, 1)
    time.sleep(4)
    load.stop()
    finish_scenario(stack, load, result)
    restarted = [w.name for w in stack.workers if not w.alive()]
    result.check(stack.api.alive(), "saasllm-api died")
    result.check(not restarted, f"workers died: {restarted}")
    # Requests in flight while PostgreSQL went away or was away, by answer.
    around = [r for r in load.records if any(r["t0"] <= b and r["t1"] >= a for a, b in windows)]
    statuses = defaultdict(int)
    for r in around:
        statuses[f'{r["kind"]}:{r["status"]}'] += 1
    result.figures["requests_across_outages"] = dict(sorted(statuses.items()))
    result.check(around, "no request was in flight during the outages (the check proved nothing)")
    # Workers reconnected by themselves: calls created after the last restart were run.
    (after,), = stack.sql(f"select count(*) from llm_calls where status = 'succeeded'"
                          f" and created_at > to_timestamp({up})")
    result.figures["succeeded_after_restart"] = int(after)
    result.check(int(after) > 0, "no call created after the restart succeeded")
    return stack
