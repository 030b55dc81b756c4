-- The whole data model: tenants, model groups, keys, credits and their ledger, jobs, LLM calls and
-- their attempts, idempotency records. Money is integer micro-dollars; credits are integers.

create table organizations (
    organization_id text primary key,
    name            text        not null,
    status          text        not null default 'active',
    metadata        jsonb       not null default '{}',
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    constraint organizations_status_check check (status in ('active', 'suspended')),
    constraint organizations_id_not_blank check (length(organization_id) between 1 and 200)
);

create table model_groups (
    model_group_id uuid primary key,
    group_name     text        not null,
    display_name   text,
    description    text,
    status         text        not null default 'active',
    metadata       jsonb       not null default '{}',
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    constraint model_groups_group_name_key unique (group_name),
    constraint model_groups_status_check check (status in ('active', 'inactive'))
);

-- The ordered model list of a group; priority 0 is tried first.
create table model_group_models (
    model_group_id uuid        not null,
    priority       integer     not null,
    model_name     text        not null,
    config         jsonb       not null default '{}',
    created_at     timestamptz not null default now(),
    constraint model_group_models_pkey primary key (model_group_id, priority),
    constraint model_group_models_group_fkey foreign key (model_group_id)
        references model_groups (model_group_id) on delete cascade,
    constraint model_group_models_model_key unique (model_group_id, model_name),
    constraint model_group_models_priority_check check (priority >= 0)
);

create table teams (
    team_id         text primary key,
    organization_id text        not null,
    team_alias      text,
    status          text        not null default 'active',
    metadata        jsonb       not null default '{}',
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    constraint teams_organization_fkey foreign key (organization_id)
        references organizations (organization_id),
    constraint teams_status_check check (status in ('active', 'suspended')),
    constraint teams_id_not_blank check (length(team_id) between 1 and 200)
);
create index teams_organization_idx on teams (organization_id);

-- Balances live apart from the team row so that the ledger's foreign key to teams never
-- contends with the hot balance row.
create table credit_balances (
    team_id                   text primary key,
    credits_allocated         bigint      not null default 0,
    credits_used              bigint      not null default 0,
    credits_reserved          bigint      not null default 0,
    credit_limit              bigint,
    auto_refill               boolean     not null default false,
    -- OpenAI-compatible path: USD spend and in-flight estimates, in micro-dollars.
    spend_micro_usd           bigint      not null default 0,
    budget_reserved_micro_usd bigint      not null default 0,
    updated_at                timestamptz not null default now(),
    created_at                timestamptz not null default now(),
    constraint credit_balances_team_fkey foreign key (team_id) references teams (team_id) on delete cascade,
    constraint credit_balances_nonnegative check (
        credits_allocated >= 0 and credits_used >= 0 and credits_reserved >= 0
        and spend_micro_usd >= 0 and budget_reserved_micro_usd >= 0),
    constraint credit_balances_available_nonnegative check (
        credits_allocated - credits_used - credits_reserved >= 0)
);

create table team_model_groups (
    team_id        text        not null,
    model_group_id uuid        not null,
    -- the order in which the admin listed the groups; it orders allowed_models too
    position       integer     not null,
    created_at     timestamptz not null default now(),
    constraint team_model_groups_pkey primary key (team_id, model_group_id),
    constraint team_model_groups_team_fkey foreign key (team_id) references teams (team_id) on delete cascade,
    constraint team_model_groups_group_fkey foreign key (model_group_id)
        references model_groups (model_group_id) on delete restrict
);
create index team_model_groups_group_idx on team_model_groups (model_group_id);

-- Virtual keys are stored only as a SHA-256 hash plus a short display prefix.
create table virtual_keys (
    key_id     uuid primary key,
    team_id    text        not null,
    key_hash   bytea       not null,
    key_prefix text        not null,
    created_at timestamptz not null default now(),
    revoked_at timestamptz,
    constraint virtual_keys_hash_key unique (key_hash),
    constraint virtual_keys_team_fkey foreign key (team_id) references teams (team_id) on delete cascade
);
create index virtual_keys_team_idx on virtual_keys (team_id);
create unique index virtual_keys_one_active_per_team on virtual_keys (team_id) where revoked_at is null;

create table jobs (
    job_id              uuid primary key,
    team_id             text        not null,
    user_id             text,
    job_type            text        not null,
    status              text        not null default 'pending',
    -- The status asked for by complete while calls were still running ('completing').
    requested_status    text,
    -- The credit held at creation: held until the job settles, then charged or released.
    credit_hold         text        not null default 'held',
    metadata            jsonb       not null default '{}',
    completion_metadata jsonb,
    error_message       text,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    completed_at        timestamptz,
    expires_at          timestamptz not null,
    constraint jobs_team_fkey foreign key (team_id) references teams (team_id),
    constraint jobs_status_check check (
        status in ('pending', 'in_progress', 'completing', 'completed', 'failed', 'expired')),
    constraint jobs_requested_status_check check (requested_status in ('completed', 'failed')),
    constraint jobs_credit_hold_check check (credit_hold in ('held', 'charged', 'released'))
);
create index jobs_team_created_idx on jobs (team_id, created_at desc);
create index jobs_open_expiry_idx on jobs (expires_at) where status in ('pending', 'in_progress', 'completing');
create index jobs_held_idx on jobs (team_id) where credit_hold = 'held';

create table credit_transactions (
    transaction_id   uuid primary key,
    seq              bigint generated always as identity,
    team_id          text        not null,
    transaction_type text        not null,
    credits_amount   bigint      not null,
    balance_after    bigint      not null,
    reason           text,
    job_id           uuid,
    metadata         jsonb       not null default '{}',
    created_at       timestamptz not null default now(),
    constraint credit_transactions_team_fkey foreign key (team_id) references teams (team_id),
    constraint credit_transactions_job_fkey foreign key (job_id) references jobs (job_id),
    constraint credit_transactions_type_check check (
        transaction_type in ('allocation', 'addition', 'deduction', 'refund')),
    constraint credit_transactions_amount_positive check (credits_amount > 0),
    -- A job is charged at most once, whatever races the application loses.
    constraint credit_transactions_job_kind_key unique (job_id, transaction_type)
);
create index credit_transactions_team_seq_idx on credit_transactions (team_id, seq desc);

create table llm_calls (
    call_id           uuid primary key,
    job_id            uuid        not null,
    team_id           text        not null,
    model_group_id    uuid,
    model_group       text        not null,
    purpose           text,
    -- messages and every chat parameter to pass upstream
    request           jsonb       not null,
    status            text        not null default 'queued',
    -- fencing token: bumped on every claim; only the holder of the current value may write a result
    lease_token       bigint      not null default 0,
    lease_expires_at  timestamptz,
    worker_id         text,
    model_used        text,
    response_content  text,
    finish_reason     text,
    response          jsonb,
    prompt_tokens     bigint,
    completion_tokens bigint,
    total_tokens      bigint,
    cost_micro_usd    bigint,
    latency_ms        bigint,
    error             text,
    created_at        timestamptz not null default now(),
    -- last time the id was pushed to Redis; the reconciler re-pushes what Redis has lost
    enqueued_at       timestamptz not null default now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    constraint llm_calls_job_fkey foreign key (job_id) references jobs (job_id),
    constraint llm_calls_team_fkey foreign key (team_id) references teams (team_id),
    constraint llm_calls_status_check check (status in ('queued', 'running', 'succeeded', 'failed'))
);
create index llm_calls_job_idx on llm_calls (job_id, created_at);
create index llm_calls_running_lease_idx on llm_calls (lease_expires_at) where status = 'running';
create index llm_calls_queued_idx on llm_calls (enqueued_at) where status = 'queued';

create table llm_call_attempts (
    attempt_id   bigint generated always as identity primary key,
    call_id      uuid        not null,
    lease_token  bigint      not null,
    model_name   text        not null,
    http_status  integer,
    outcome      text        not null,
    latency_ms   bigint      not null,
    error        text,
    created_at   timestamptz not null default now(),
    constraint llm_call_attempts_call_fkey foreign key (call_id) references llm_calls (call_id) on delete cascade,
    constraint llm_call_attempts_outcome_check check (outcome in ('succeeded', 'fallback', 'fatal'))
);
create index llm_call_attempts_call_idx on llm_call_attempts (call_id);

-- A retried request with the same Idempotency-Key gets the first response back.
create table idempotency_records (
    scope           text        not null,
    idempotency_key text        not null,
    request_hash    bytea       not null,
    response_status integer,
    response_body   jsonb,
    created_at      timestamptz not null default now(),
    constraint idempotency_records_pkey primary key (scope, idempotency_key)
);
create index idempotency_records_created_idx on idempotency_records (created_at);
