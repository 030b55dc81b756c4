-- History for the console scenario (bench/src/console.rs), written straight into the tables once
-- `console_seed_params` (jobs, team_ids, group_name) is made: jobs over the last 30 days spread
-- unevenly over the teams (the first team gets the most), their calls and attempts, the ledger's
-- deductions and the balances that match them, and webhook deliveries with their attempts. Rows
-- go in in time order, as they would arrive (the BRIN indexes on created_at rely on that). Every
-- call is finished and no delivery is pending, so the API's embedded worker finds nothing to
-- run; open jobs expire tomorrow.

select setseed(0.42);

-- One row per job with every random draw made once (a subquery with volatile functions in its
-- select list is not flattened, so each draw is evaluated once per row).
create temp table seed_jobs as
select d.job_id, d.team_id, d.job_type, d.created_at, d.status, d.hook,
       case when d.status in ('pending', 'in_progress') then null
            else least(d.created_at + (8 + d.r_run * 60) * interval '1 second', now()) end as completed_at,
       case when d.status = 'pending' then 0 else 1 + (d.r_calls < 0.5)::int end as n_calls
from (
    select g.*,
           case when g.created_at > now() - interval '1 day' and g.r_status < 0.10 then 'pending'
                when g.created_at > now() - interval '1 day' and g.r_status < 0.25 then 'in_progress'
                when g.r_status < 0.80 then 'completed'
                when g.r_status < 0.92 then 'failed'
                else 'cancelled' end as status
    from (
        select gen_random_uuid() as job_id,
               p.team_ids[1 + floor(cardinality(p.team_ids) * power(random(), 2))::int] as team_id,
               (array['document_analysis', 'summarize', 'classify', 'extract', 'translate'])
                   [1 + floor(random() * 5)::int] as job_type,
               now() - interval '30 days' * (1 - (i - 0.5) / p.jobs) as created_at,
               random() as r_status, random() as r_run, random() as r_calls, random() < 0.1 as hook
        from console_seed_params p cross join generate_series(1, p.jobs) as i
    ) g
) d;

insert into jobs (job_id, team_id, user_id, job_type, status, credit_hold, metadata, completion_metadata,
                  error_message, created_at, updated_at, completed_at, expires_at, callback_url, callback_secret)
select job_id, team_id, 'user_' || (abs(hashtext(job_id::text)) % 500), job_type, status,
       case status when 'completed' then 'charged' when 'pending' then 'held'
                   when 'in_progress' then 'held' else 'released' end,
       jsonb_build_object('document_id', 'doc_' || left(job_id::text, 8)),
       case when status in ('completed', 'failed') then '{"result": "done"}'::jsonb end,
       case when status = 'failed' then 'a call failed' end,
       created_at, coalesce(completed_at, created_at), completed_at,
       case when completed_at is null then now() + interval '1 day' else created_at + interval '1 day' end,
       case when hook then 'https://hooks.example.com/saasllm' end,
       case when hook then 'whsec_c2VlZGVkLWJ5LXRoZS1iZW5jaG1hcmstb25seQ==' end
from seed_jobs order by created_at;

-- Calls: a cancelled job's calls were cancelled; a failed job's last call failed. 40 % of the
-- calls that ran have attempt rows, a quarter of those a fallback from gpt-4o-mini to gpt-4o.
create temp table seed_calls as
select c.*,
       c.status <> 'cancelled' and c.r_attempts < 0.4 as with_attempts,
       c.status <> 'cancelled' and c.r_attempts < 0.1 as fallback
from (
    select gen_random_uuid() as call_id, j.job_id, j.team_id,
           case when j.status = 'cancelled' then 'cancelled'
                when j.status = 'failed' and k = j.n_calls then 'failed' else 'succeeded' end as status,
           least(j.created_at + (k - 1) * interval '2 seconds' + interval '100 ms', now()) as created_at,
           random() as r_attempts, 50 + floor(random() * 1500)::int8 as prompt_tokens,
           10 + floor(random() * 500)::int8 as completion_tokens, 200 + floor(random() * 2500)::int8 as latency_ms
    from seed_jobs j cross join generate_series(1, j.n_calls) as k
) c;

insert into llm_calls (call_id, job_id, team_id, model_group_id, model_group, purpose, request, status, lease_token,
                       worker_id, model_used, response_content, finish_reason, response, prompt_tokens,
                       completion_tokens, total_tokens, cost_micro_usd, latency_ms, error, created_at, enqueued_at,
                       started_at, finished_at)
select c.call_id, c.job_id, c.team_id, g.model_group_id, g.group_name, 'analysis',
       jsonb_build_object('messages', jsonb_build_array(
           jsonb_build_object('role', 'user', 'content', 'Analyze document ' || left(c.job_id::text, 8)))),
       c.status, (c.status <> 'cancelled')::int,
       case when c.status <> 'cancelled' then 'worker-' || (abs(hashtext(c.call_id::text)) % 4) end,
       case when c.status = 'cancelled' then null when c.fallback then 'gpt-4o' else 'gpt-4o-mini' end,
       case when c.status = 'succeeded' then 'The document is about ' || c.job_id end,
       case when c.status = 'succeeded' then 'stop' end,
       case when c.status = 'succeeded' then jsonb_build_object('object', 'chat.completion',
           'usage', jsonb_build_object('prompt_tokens', c.prompt_tokens, 'completion_tokens', c.completion_tokens)) end,
       case when c.status = 'succeeded' then c.prompt_tokens end,
       case when c.status = 'succeeded' then c.completion_tokens end,
       case when c.status = 'succeeded' then c.prompt_tokens + c.completion_tokens end,
       -- Micro-dollars per token: gpt-4o-mini 0.15 in, 0.60 out; gpt-4o 2.50 in, 10.00 out.
       case when c.status <> 'succeeded' then null
            when c.fallback then (c.prompt_tokens * 2.5 + c.completion_tokens * 10)::int8
            else (c.prompt_tokens * 0.15 + c.completion_tokens * 0.6)::int8 end,
       case when c.status <> 'cancelled' then c.latency_ms end,
       case when c.status = 'failed' then 'upstream answered HTTP 500' end,
       c.created_at, c.created_at,
       case when c.status <> 'cancelled' then c.created_at + interval '20 ms' end,
       case when c.status = 'cancelled' then c.created_at + interval '1 second'
            else c.created_at + interval '20 ms' + c.latency_ms * interval '1 ms' end
from seed_calls c cross join console_seed_params p
     join model_groups g on g.group_name = p.group_name
order by c.created_at;

insert into llm_call_attempts (call_id, lease_token, model_name, http_status, outcome, latency_ms, error, created_at)
select call_id, 1, model_name, http_status, outcome, latency_ms, error, created_at
from (
    select call_id, 'gpt-4o-mini' as model_name, 503 as http_status, 'fallback' as outcome, 150::int8 as latency_ms,
           'upstream answered HTTP 503' as error, created_at + interval '20 ms' as created_at, 1 as n
    from seed_calls where fallback
    union all
    select call_id, case when fallback then 'gpt-4o' else 'gpt-4o-mini' end,
           case when status = 'failed' then 500 else 200 end,
           case when status = 'failed' then 'fatal' else 'succeeded' end, latency_ms,
           case when status = 'failed' then 'upstream answered HTTP 500' end,
           created_at + interval '20 ms' + latency_ms * interval '1 ms', 2
    from seed_calls where with_attempts
) a
order by created_at, n;

-- The ledger: one deduction per completed job, each balance one below the previous; the
-- balances then hold what the jobs used and what the open ones still hold.
insert into credit_transactions (transaction_id, team_id, transaction_type, credits_amount, balance_after,
                                 reason, job_id, created_at)
select gen_random_uuid(), j.team_id, 'deduction', 1,
       b.credits_allocated - row_number() over (partition by j.team_id order by j.completed_at, j.job_id),
       'Job ' || j.job_type || ' completed successfully', j.job_id, j.completed_at
from seed_jobs j join credit_balances b using (team_id)
where j.status = 'completed'
order by j.completed_at, j.job_id;

update credit_balances b
set credits_used = b.credits_used + x.charged, credits_reserved = b.credits_reserved + x.held
from (select team_id, count(*) filter (where status = 'completed') as charged,
             count(*) filter (where status in ('pending', 'in_progress')) as held
      from seed_jobs group by team_id) x
where b.team_id = x.team_id;

-- The teams' allocations came before their history.
update credit_transactions set created_at = now() - interval '31 days'
where transaction_type = 'allocation' and team_id in (select unnest(team_ids) from console_seed_params);

-- Webhooks: 85 % delivered at once, 10 % after a retry or two, 5 % given up after 6 attempts.
create temp table seed_deliveries as
select gen_random_uuid() as delivery_id, d.job_id, d.team_id, d.status as job_status, d.created_at,
       case when d.r < 0.85 then 1 when d.r < 0.95 then 2 + (d.r < 0.9)::int else 6 end as attempts,
       case when d.r < 0.95 then 'delivered' else 'failed' end as status
from (select job_id, team_id, status, completed_at as created_at, random() as r
      from seed_jobs where hook and completed_at is not null) d;

insert into webhook_deliveries (delivery_id, job_id, team_id, event_type, payload, url, status, attempts,
                                next_attempt_at, last_http_status, last_error, created_at, delivered_at)
select delivery_id, job_id, team_id, 'job.settled',
       jsonb_build_object('type', 'job.settled', 'timestamp', created_at,
                          'data', jsonb_build_object('job_id', job_id, 'team_id', team_id, 'status', job_status)),
       'https://hooks.example.com/saasllm', status, attempts, created_at + attempts * interval '30 seconds',
       case when status = 'delivered' then 200 else 503 end,
       case when status = 'failed' then 'HTTP 503' end,
       created_at,
       case when status = 'delivered' then created_at + (attempts - 1) * interval '30 seconds' end
from seed_deliveries order by created_at;

insert into webhook_delivery_attempts (delivery_id, attempt_number, attempted_at, http_status, error, latency_ms)
select d.delivery_id, a, d.created_at + (a - 1) * interval '30 seconds',
       case when a = d.attempts and d.status = 'delivered' then 200 when a % 2 = 1 then null else 503 end,
       case when a = d.attempts and d.status = 'delivered' then null
            when a % 2 = 1 then 'connection failed' else 'HTTP 503' end,
       20 + a * 7
from seed_deliveries d cross join generate_series(1, d.attempts) as a
order by d.created_at, a;

-- What settlement keeps on a settled job's row: its calls' totals, when they had all finished.
-- The seed writes its rows after the migrations ran, so it fills them with the same statement
-- as the backfill in migrations/20261203120000_console.sql (migrations stay as they shipped).
update jobs j set calls_cost_micro_usd = s.cost, calls_tokens = s.tokens
from (select c.job_id, coalesce(sum(c.cost_micro_usd), 0)::int8 as cost,
             coalesce(sum(c.total_tokens), 0)::int8 as tokens
      from llm_calls c group by c.job_id
      having count(*) filter (where c.finished_at is null) = 0) s
where j.job_id = s.job_id and j.credit_hold <> 'held';
