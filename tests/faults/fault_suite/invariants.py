"""The invariants every scenario ends with."""

import requests

from .observations import overlapping_executions, reconciler_counts, upstream_intervals, wait_drained


class Result:
    """One scenario's outcome: the invariants it broke and the figures it measured."""

    def __init__(self, name):
        self.name = name
        self.violations = []
        self.figures = {}
        self.notes = []

    def check(self, condition, message):
        if not condition:
            self.violations.append(message)

    @property
    def passed(self):
        return not self.violations


def check_invariants(stack, load, result):
    """The invariants every scenario ends with, from SQL (plus the client's and upstream's view)."""
    v = result.check
    check_ledger(stack, v)
    jobs = check_jobs(stack, v)
    calls = check_calls(stack, v)
    accepted, finished, db_calls = check_client_view(stack, load, v)
    overlaps, reexecuted = check_upstream_view(stack, db_calls, v)

    duplicates = calls["multi_token"] + calls["multi_success"] + calls["token_mismatch"] + len(overlaps)
    repushed, requeued = reconciler_counts(stack)
    result.figures.update({
        "accepted": len(accepted),
        "finished": finished,
        "calls_in_db": calls["calls"],
        "succeeded": calls["succeeded"],
        "failed": calls["failed"],
        "jobs": jobs["total"],
        "charged": jobs["charged"],
        "duplicates": duplicates,
        "double_charges": jobs["double_charges"],
        "reclaimed": calls["reclaimed"],
        "reexecuted_upstream": reexecuted,
        "max_call_latency_s": calls["max_latency"],
        "reconciler_requeued_leases": requeued,
        "reconciler_repushed_lost": repushed,
    })
    v(duplicates == 0, f"duplicates: {duplicates}")
    v(jobs["double_charges"] == 0, f"double charges: {jobs['double_charges']}")


def check_ledger(stack, v):
    """Ledger, per team: allocated = allocations + additions, used = deductions, remaining =
    allocated - used, the balance_after chain, reserved = open holds; the API's view agrees."""
    rows = stack.sql("""
        with chain as (
            select team_id, balance_after,
                   sum(case when transaction_type in ('allocation', 'addition') then credits_amount
                            when transaction_type = 'deduction' then -credits_amount else 0 end)
                       over (partition by team_id order by seq) as running
            from credit_transactions)
        select b.team_id, b.credits_allocated, b.credits_used, b.credits_reserved,
          coalesce((select sum(credits_amount) from credit_transactions t where t.team_id = b.team_id
                    and t.transaction_type in ('allocation', 'addition')), 0),
          coalesce((select sum(credits_amount) from credit_transactions t where t.team_id = b.team_id
                    and t.transaction_type = 'deduction'), 0),
          (select count(*) from credit_transactions t where t.team_id = b.team_id
                    and t.transaction_type not in ('allocation', 'addition', 'deduction')),
          (select count(*) from chain c where c.team_id = b.team_id and c.running <> c.balance_after),
          (select count(*) from jobs j where j.team_id = b.team_id and j.credit_hold = 'held')
        from credit_balances b order by b.team_id""")
    for team, allocated, used, reserved, added, deducted, odd, broken, holds in rows:
        allocated, used, reserved, added, deducted = map(int, (allocated, used, reserved, added, deducted))
        v(allocated == added, f"{team}: credits_allocated {allocated} != allocations+additions {added}")
        v(used == deducted, f"{team}: credits_used {used} != deductions {deducted}")
        v(int(odd) == 0, f"{team}: {odd} unexpected ledger rows (refunds?)")
        v(int(broken) == 0, f"{team}: balance_after chain broken in {broken} rows")
        v(reserved == int(holds), f"{team}: credits_reserved {reserved} != open holds {holds}")
        check_api_balance(stack, team, added - deducted, v)


def check_api_balance(stack, team, expected, v):
    try:
        r = requests.get(f"{stack.api_url}/api/credits/teams/{team}/balance",
                         headers={"Authorization": f"Bearer {stack.keys[team]}"}, timeout=10)
        remaining = r.json().get("credits_remaining")
        v(remaining == expected,
          f"{team}: API credits_remaining {remaining} != additions - deductions {expected}")
    except (requests.RequestException, ValueError) as e:
        v(False, f"{team}: balance endpoint failed: {e}")


def check_jobs(stack, v):
    """Jobs: at most one deduction each, exactly one for each job completed successfully, none
    otherwise; no hold left on a settled job; nothing left unsettled. Returns the counts the
    figures show."""
    (total, multi, stray, charged_not_one, held_settled, unsettled, uncharged_success,
     charged_failed, charged), = stack.sql("""
        select count(*),
          count(*) filter (where d > 1),
          count(*) filter (where d >= 1 and not (credit_hold = 'charged' and status = 'completed')),
          count(*) filter (where credit_hold = 'charged' and d <> 1),
          count(*) filter (where status in ('completed', 'failed', 'expired') and credit_hold = 'held'),
          count(*) filter (where status in ('pending', 'in_progress', 'completing')),
          count(*) filter (where status = 'completed' and failed_calls = 0 and credit_hold <> 'charged'),
          count(*) filter (where credit_hold = 'charged' and failed_calls > 0),
          count(*) filter (where credit_hold = 'charged')
        from (select j.status, j.credit_hold,
                (select count(*) from credit_transactions t where t.job_id = j.job_id
                   and t.transaction_type = 'deduction') as d,
                (select count(*) from llm_calls c where c.job_id = j.job_id and c.status = 'failed') as failed_calls
              from jobs j) x""")
    double_charges = int(multi) + int(stray) + int(charged_failed)
    v(int(multi) == 0, f"{multi} jobs with more than one deduction")
    v(int(stray) == 0, f"{stray} deductions on jobs that are not completed and charged")
    v(int(charged_failed) == 0, f"{charged_failed} jobs charged although a call failed")
    v(int(charged_not_one) == 0, f"{charged_not_one} charged jobs without exactly one deduction")
    v(int(held_settled) == 0, f"{held_settled} settled jobs still holding a credit")
    v(int(unsettled) == 0, f"{unsettled} jobs never settled")
    v(int(uncharged_success) == 0, f"{uncharged_success} successfully completed jobs not charged")
    return {"total": int(total), "charged": int(charged), "double_charges": double_charges}


def check_calls(stack, v):
    """Calls: all terminal; one succeeded attempt per succeeded call (none per failed call);
    attempts only from the lease token that wrote the result. Returns the counts the figures
    show."""
    (calls, unfinished, succeeded, failed, bad_success, failed_with_success, multi_token,
     multi_success, token_mismatch, reclaimed, max_latency), = stack.sql("""
        select count(*),
          count(*) filter (where status in ('queued', 'running')),
          count(*) filter (where status = 'succeeded'),
          count(*) filter (where status = 'failed'),
          count(*) filter (where status = 'succeeded' and (succ <> 1 or response_content is null
                                                           or finished_at is null or model_used is null)),
          count(*) filter (where status = 'failed' and succ > 0),
          count(*) filter (where tokens > 1),
          count(*) filter (where succ > 1),
          count(*) filter (where mismatched > 0),
          count(*) filter (where lease_token > 1),
          coalesce(round(max(extract(epoch from finished_at - created_at))::numeric, 2), 0)
        from (select c.status, c.response_content, c.finished_at, c.created_at, c.model_used, c.lease_token,
                (select count(*) from llm_call_attempts a where a.call_id = c.call_id and a.outcome = 'succeeded') as succ,
                (select count(distinct a.lease_token) from llm_call_attempts a where a.call_id = c.call_id) as tokens,
                (select count(*) from llm_call_attempts a where a.call_id = c.call_id
                   and a.lease_token <> c.lease_token) as mismatched
              from llm_calls c) x""")
    v(int(unfinished) == 0, f"{unfinished} calls still queued or running")
    # The fake upstream never fails these models: a failed call means a fault leaked into a result.
    v(int(failed) == 0, f"{failed} calls failed")
    v(int(bad_success) == 0, f"{bad_success} succeeded calls without exactly one successful result")
    v(int(failed_with_success) == 0, f"{failed_with_success} failed calls with a successful attempt")
    v(int(multi_token) == 0, f"{multi_token} calls with attempts recorded under two lease tokens")
    v(int(multi_success) == 0, f"{multi_success} calls with more than one successful attempt")
    v(int(token_mismatch) == 0, f"{token_mismatch} calls with attempts of a stale lease token")
    return {"calls": int(calls), "succeeded": int(succeeded), "failed": int(failed),
            "multi_token": int(multi_token), "multi_success": int(multi_success),
            "token_mismatch": int(token_mismatch), "reclaimed": int(reclaimed),
            "max_latency": float(max_latency)}


def check_client_view(stack, load, v):
    """The client's view: every 2xx is in the database (nothing acknowledged and then lost).
    Returns the accepted call ids, how many of them finished, and every call's status."""
    db_calls = {r[0]: r[1] for r in stack.sql("select call_id, status from llm_calls")}
    db_jobs = {r[0] for r in stack.sql("select job_id from jobs")}
    accepted = load.accepted_calls()
    missing = [c for c in accepted if c not in db_calls]
    v(not missing, f"{len(missing)} calls acknowledged with 2xx are not in the database: {missing[:3]}")
    accepted_jobs = [r["id"] for r in load.of("job") if 200 <= r["status"] < 300 and r["id"]]
    missing_jobs = [j for j in accepted_jobs if j not in db_jobs]
    v(not missing_jobs, f"{len(missing_jobs)} jobs acknowledged with 2xx are not in the database")
    finished = sum(1 for c in accepted if db_calls.get(c) in ("succeeded", "failed"))
    for job, body in load.complete_bodies.items():
        applied = (body.get("costs") or {}).get("credit_applied")
        if applied is True:
            (hold,), = stack.sql(f"select credit_hold from jobs where job_id = '{job}'")
            v(hold == "charged", f"job {job}: complete answered credit_applied but hold is {hold}")
    return accepted, finished, db_calls


def check_upstream_view(stack, db_calls, v):
    """The upstream's view: no call in flight twice at once, and every succeeded call was seen.
    Returns the overlapping calls and how many calls reached the upstream more than once."""
    intervals, unlabelled = upstream_intervals(stack)
    overlaps = overlapping_executions(intervals)
    v(not overlaps, f"{len(overlaps)} calls ran concurrently on two workers: {overlaps[:3]}")
    v(unlabelled == 0, f"{unlabelled} upstream requests without the call id header")
    unseen = [c for c, s in db_calls.items() if s == "succeeded" and c not in intervals]
    v(not unseen, f"{len(unseen)} succeeded calls never reached the upstream")
    reexecuted = sum(1 for spans in intervals.values() if len(spans) > 1)
    return overlaps, reexecuted


def finish_scenario(stack, load, result, drain_timeout=90, since=None):
    """Stops the load, completes every job, waits for the queue to drain, checks invariants."""
    if not load.stop_event.is_set():
        load.stop()
    since = since or load.stopped
    load.finish_jobs()
    drain = wait_drained(stack, load, since, drain_timeout)
    stack.monitoring = False
    samples = getattr(stack, "queue_samples", [])
    result.figures["redis_queue_max"] = max((n for _, n, _ in samples), default=0)
    result.figures["queued_calls_max"] = max((q for _, _, q in samples), default=0)
    result.check(drain is not None, f"queue did not drain within {drain_timeout} s")
    result.figures["drain_s"] = round(drain, 1) if drain is not None else None
    calls = load.of("call")
    result.figures["submissions"] = len(calls)
    result.figures["non_2xx"] = sum(1 for r in calls if not 200 <= r["status"] < 300)
    check_invariants(stack, load, result)


def no_spurious_repush(result):
    """Without a fault nothing is lost, so the reconciler must not push any call again (each
    such push is a duplicate entry in Redis)."""
    n = result.figures.get("reconciler_repushed_lost", 0)
    result.check(n == 0, f"the reconciler pushed {n} calls again although none was lost")
