-- Attempts now include retries of a transient failure on the same model ('retry') and models
-- passed over while cooling down after repeated failures ('skipped').
alter table llm_call_attempts drop constraint llm_call_attempts_outcome_check;
alter table llm_call_attempts add constraint llm_call_attempts_outcome_check
    check (outcome in ('succeeded', 'retry', 'fallback', 'skipped', 'fatal'));
