-- The web console: server-side sessions and the indexes its lists page through.

-- A signed-in browser. The cookie carries a random token; only its SHA-256 is stored. The
-- caller is resolved from `key_hash` (the hash of the key used to sign in) on every request,
-- so rotating or revoking that key, suspending the team or changing the admin key ends the
-- session at once.
create table console_sessions (
    session_hash bytea       primary key,
    key_hash     bytea       not null,
    csrf_token   text        not null,
    created_at   timestamptz not null default now(),
    expires_at   timestamptz not null
);
create index console_sessions_expires_idx on console_sessions (expires_at);

-- Jobs across teams, newest first: keyset pages of the jobs list (a status or type filter
-- reads this order and skips what does not match). No index names `status`: a job's open
-- steps (pending -> in_progress -> completing) stay heap-only updates that write no index.
create index jobs_created_idx on jobs (created_at desc, job_id desc);

-- Time-bucketed counts over the last hour for the overview. BRIN: rows arrive in time order,
-- and a BRIN entry costs an insert almost nothing (these tables are on the hot path).
create index llm_calls_created_brin on llm_calls using brin (created_at);
create index llm_call_attempts_created_brin on llm_call_attempts using brin (created_at);
create index credit_transactions_created_brin on credit_transactions using brin (created_at);
create index spend_records_created_brin on spend_records using brin (created_at);

-- The totals of a settled job's calls, written when it settles if every call has finished by
-- then (null otherwise, and while the job is open): usage reports read one row per job instead
-- of summing every call of every job in the period. A call that finishes after its job settled
-- (a running call of a cancelled or expired job) leaves them null, so such a job is summed
-- from its calls as before, and a report is exact either way.
alter table jobs add column calls_cost_micro_usd bigint, add column calls_tokens bigint;
update jobs j set calls_cost_micro_usd = s.cost, calls_tokens = s.tokens
from (select c.job_id, coalesce(sum(c.cost_micro_usd), 0)::int8 as cost,
             coalesce(sum(c.total_tokens), 0)::int8 as tokens
      from llm_calls c group by c.job_id
      having count(*) filter (where c.finished_at is null) = 0) s
where j.job_id = s.job_id and j.credit_hold <> 'held';
update jobs j set calls_cost_micro_usd = 0, calls_tokens = 0
where j.credit_hold <> 'held' and j.calls_cost_micro_usd is null
  and not exists (select 1 from llm_calls c where c.job_id = j.job_id);

-- How many distinct UTC days the jobs span: usage reports group by day, and without this the
-- planner takes every job for a group of its own and sorts them all instead of hashing a few
-- dozen groups. Expression statistics exist from PostgreSQL 14 on; older servers go without.
do $$
begin
    if current_setting('server_version_num')::int >= 140000 then
        execute 'create statistics jobs_created_day_stats on ((created_at at time zone ''UTC'')::date) from jobs';
    end if;
end
$$;
