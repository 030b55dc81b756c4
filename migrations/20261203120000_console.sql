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
