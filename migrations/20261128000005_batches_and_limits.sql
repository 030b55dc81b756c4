-- Batch pipelines and fair sharing: client ids for bulk-submitted calls, job cancellation, and
-- per-team limits enforced by the dispatcher and the synchronous paths.

alter table llm_calls add column custom_id text;
-- A client's id names one call of the job; results are matched by it.
create unique index llm_calls_job_custom_id_key on llm_calls (job_id, custom_id) where custom_id is not null;
-- Paging a job's calls in id order (ids are time-ordered UUIDv7), optionally by status.
create index llm_calls_job_call_idx on llm_calls (job_id, call_id);

alter table llm_calls drop constraint llm_calls_status_check;
alter table llm_calls add constraint llm_calls_status_check
    check (status in ('queued', 'running', 'succeeded', 'failed', 'cancelled'));

alter table jobs drop constraint jobs_status_check;
alter table jobs add constraint jobs_status_check check (
    status in ('pending', 'in_progress', 'completing', 'completed', 'failed', 'expired', 'cancelled'));

-- Null means unlimited.
alter table teams add column max_concurrent_calls integer;
alter table teams add column requests_per_minute integer;
alter table teams add column tokens_per_minute integer;
alter table teams add constraint teams_limits_positive check (
    coalesce(max_concurrent_calls, 1) > 0 and coalesce(requests_per_minute, 1) > 0
    and coalesce(tokens_per_minute, 1) > 0);
