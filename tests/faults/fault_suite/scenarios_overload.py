"""Overload: many more submissions than the workers serve."""

import threading
import time

import requests

from .common import say
from .invariants import finish_scenario, no_spurious_repush
from .load import Load
from .stack import Stack


def percentile(values, p):
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def scenario_overload(cluster, result):
    """Ten times more submissions than the workers serve: the API answers /health quickly all
    along, the backlog drains without duplicate queue entries, memory stays bounded."""
    workers, concurrency, upstream_ms = 2, 2, 1000
    capacity = workers * concurrency * 1000 / upstream_ms  # calls per second
    stack = Stack(cluster, "overload", workers=workers, concurrency=concurrency,
                  model=f"slow-{upstream_ms}")
    stack.start()
    latencies, health_errors = [], []
    sampling = threading.Event()

    def sample():
        session = requests.Session()
        while not sampling.is_set():
            t = time.perf_counter()
            try:
                status = session.get(f"{stack.api_url}/health", timeout=5).status_code
                if status != 200:
                    health_errors.append(status)
            except requests.RequestException as e:
                health_errors.append(type(e).__name__)
            latencies.append((time.perf_counter() - t) * 1000)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    load = Load(stack, threads=4, calls_per_job=10, pause=0, calls_per_sec=10 * capacity)
    load.start()
    time.sleep(4)
    load.stop()
    submitted = len(load.of("call"))
    rate = submitted / (load.stopped - load.started)
    say(f"overload: {submitted} submissions at {rate:.0f}/s against a capacity of {capacity:.0f}/s")
    finish_scenario(stack, load, result, drain_timeout=180)
    sampling.set()
    sampler.join(10)
    memory = {"api": stack.api.memory()}
    for w in stack.live_workers():
        memory[w.name] = w.memory()
    submit_ms = [(r["t1"] - r["t0"]) * 1000 for r in load.of("call")]
    result.figures.update({
        "capacity_per_s": capacity, "submit_rate_per_s": round(rate, 1),
        "overload_factor": round(rate / capacity, 1),
        "health_samples": len(latencies),
        "health_p50_ms": round(percentile(latencies, 50), 1),
        "health_p99_ms": round(percentile(latencies, 99), 1),
        "health_max_ms": round(max(latencies, default=0), 1),
        "health_errors": len(health_errors),
        "submit_p99_ms": round(percentile(submit_ms, 99), 1),
        "vm_hwm_mib": {k: round(m.get("VmHWM", 0), 1) for k, m in memory.items()},
    })
    result.check(rate >= 5 * capacity, f"submission rate {rate:.0f}/s is not an overload")
    result.check(percentile(latencies, 99) < 1000 and max(latencies, default=0) < 3000,
                 "/health was slow under load (p99 >= 1 s or max >= 3 s)")
    result.check(not health_errors, f"/health failed under load: {health_errors[:5]}")
    for name, m in memory.items():
        result.check(m.get("VmHWM", 0) < 1024, f"{name} peak RSS {m.get('VmHWM')} MiB >= 1 GiB")
    no_spurious_repush(result)
    return stack
