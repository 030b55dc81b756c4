-- The OpenAI-compatible surface for pipelines: embeddings, files and the Batch API.

-- Which upstream endpoint a call is sent to. Calls made through the job API are chat; a batch's
-- lines may be embeddings.
alter table llm_calls add column endpoint text not null default 'chat';
alter table llm_calls add constraint llm_calls_endpoint_check check (endpoint in ('chat', 'embeddings'));
-- A batch line naming a model directly (not a model group): `[[model, config]]`, used by the
-- claim instead of the group's models. Null for calls of a model group.
alter table llm_calls add column model_chain jsonb;
-- What a batch line's estimate reserved of the team's USD budget, in micro-dollars.
alter table llm_calls add column budget_micro_usd bigint;
-- OpenAI's error code of a batch line refused before it ran (`model_not_allowed`,
-- `insufficient_quota`, ...); such a line is stored failed and never queued.
alter table llm_calls add column error_code text;

alter table spend_records add column endpoint text not null default 'chat';
alter table spend_records add constraint spend_records_endpoint_check check (endpoint in ('chat', 'embeddings'));

-- Files of a team, as OpenAI's Files API has them. The content is kept in chunks of at most
-- 1 MiB, written and read one chunk at a time, so a 200 MB file never sits whole in memory.
create table files (
    file_id    text        primary key,
    team_id    text        not null,
    purpose    text        not null,
    filename   text        not null,
    bytes      bigint      not null,
    -- Lines of the content (a last line without a newline counts).
    line_count bigint      not null,
    created_at timestamptz not null default now(),
    constraint files_team_fkey foreign key (team_id) references teams (team_id) on delete cascade,
    constraint files_purpose_check check (purpose in ('batch', 'batch_output')),
    constraint files_bytes_check check (bytes >= 0 and line_count >= 0),
    constraint files_filename_check check (length(filename) between 1 and 512)
);
create index files_team_idx on files (team_id, file_id desc);

create table file_chunks (
    file_id text    not null,
    seq     integer not null,
    data    bytea   not null,
    constraint file_chunks_pkey primary key (file_id, seq),
    constraint file_chunks_file_fkey foreign key (file_id) references files (file_id) on delete cascade
);

-- Batches of OpenAI's Batch API. A batch runs as a job of the team (`job_id`), its lines as the
-- job's calls. The worker moves it along: validating -> in_progress -> finalizing -> completed,
-- or failed (a malformed file), expired (the window ended first), cancelling -> cancelled.
create table batches (
    batch_id          text        primary key,
    team_id           text        not null,
    job_id            uuid,
    endpoint          text        not null,
    -- Kept when the file is deleted later, as OpenAI keeps it.
    input_file_id     text        not null,
    completion_window text        not null,
    status            text        not null default 'validating',
    -- The terminal status finalizing leads to.
    ending            text,
    -- OpenAI's `errors.data` when validation failed.
    errors            jsonb,
    output_file_id    text,
    error_file_id     text,
    metadata          jsonb,
    total_lines       integer     not null default 0,
    completed_lines   integer     not null default 0,
    failed_lines      integer     not null default 0,
    -- The budget slice holding the lines' estimates until the batch ends.
    budget_slice_id   uuid,
    -- USD per credit of the deployment when the batch was created (the budget is credits x
    -- this); the worker that validates batches does not carry the API's billing settings.
    usd_per_credit_micro bigint   not null,
    -- When a worker last took the batch for validation; another takes it over if that worker
    -- has not finished within a while (it died).
    validation_taken_at timestamptz,
    -- When a worker last checked the running batch's spend against its reservation (one worker
    -- checks every few seconds, not every worker every second).
    spend_checked_at  timestamptz,
    created_at        timestamptz not null default now(),
    in_progress_at    timestamptz,
    expires_at        timestamptz not null,
    finalizing_at     timestamptz,
    completed_at      timestamptz,
    failed_at         timestamptz,
    expired_at        timestamptz,
    cancelling_at     timestamptz,
    cancelled_at      timestamptz,
    updated_at        timestamptz not null default now(),
    constraint batches_team_fkey foreign key (team_id) references teams (team_id) on delete cascade,
    constraint batches_job_fkey foreign key (job_id) references jobs (job_id),
    constraint batches_job_key unique (job_id),
    constraint batches_endpoint_check check (endpoint in ('/v1/chat/completions', '/v1/embeddings')),
    constraint batches_status_check check (status in (
        'validating', 'failed', 'in_progress', 'finalizing', 'completed', 'expired', 'cancelling', 'cancelled')),
    constraint batches_ending_check check (ending in ('completed', 'expired', 'cancelled'))
);
create index batches_team_idx on batches (team_id, batch_id desc);
-- The worker's pass looks only at batches that are not finished.
create index batches_active_idx on batches (created_at)
    where status in ('validating', 'in_progress', 'finalizing', 'cancelling');
