"""What the suite observes besides SQL: the drain, the upstream's request log and the workers'
log lines."""

import json
import time
from collections import defaultdict


def wait_drained(stack, load, since, timeout):
    """Waits until no call is queued or running and every job is settled; returns seconds from
    `since`, or None on timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        stack.tick()
        try:
            (calls, jobs), = stack.sql(
                "select (select count(*) from llm_calls where status in ('queued', 'running')),"
                " (select count(*) from jobs where status in ('pending', 'in_progress', 'completing'))")
            if int(calls) == 0 and int(jobs) == 0:
                return time.time() - since
        except Exception:  # noqa: BLE001 - PostgreSQL may be restarting
            pass
        time.sleep(0.2)
    return None


def upstream_intervals(stack):
    intervals = defaultdict(list)
    unlabelled = 0
    try:
        lines = stack.upstream_log.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("call_id"):
            intervals[entry["call_id"]].append((entry["start"], entry["end"]))
        else:
            unlabelled += 1
    return intervals, unlabelled


def reconciler_counts(stack):
    """Calls the reconcilers re-pushed as missing from Redis, and re-queued after a lease expired
    (summed from the workers' log lines)."""
    repushed = requeued = 0
    for w in stack.workers:
        try:
            lines = w.log_path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            count = line.rsplit("count=", 1)[-1].split()[0] if "count=" in line else "0"
            if "re-pushed queued calls missing from Redis" in line:
                repushed += int(count)
            elif "re-queued calls whose worker lease expired" in line:
                requeued += int(count)
    return repushed, requeued


def overlapping_executions(intervals):
    """Pairs of upstream requests of the same call that were in flight at the same time."""
    overlaps = []
    for call_id, spans in intervals.items():
        spans = sorted(spans)
        latest_end = None
        for start, end in spans:
            if latest_end is not None and start < latest_end:
                overlaps.append(call_id)
            latest_end = end if latest_end is None else max(latest_end, end)
    return overlaps
