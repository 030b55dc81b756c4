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

-- Jobs across teams, newest first, optionally of one status: keyset pages of the jobs list.
-- `status` is already indexed (partial indexes), so this costs jobs no HOT updates.
create index jobs_created_idx on jobs (created_at desc, job_id desc);
create index jobs_status_created_idx on jobs (status, created_at desc, job_id desc);

-- Time-bucketed counts over the last hour for the overview. BRIN: rows arrive in time order,
-- and a BRIN entry costs an insert almost nothing (these tables are on the hot path).
create index llm_calls_created_brin on llm_calls using brin (created_at);
create index llm_call_attempts_created_brin on llm_call_attempts using brin (created_at);
create index credit_transactions_created_brin on credit_transactions using brin (created_at);
create index spend_records_created_brin on spend_records using brin (created_at);
