-- Claims, lease extensions and a job's early status steps become heap-only-tuple (HOT) updates.
--
-- PostgreSQL updates a row without touching any index (HOT) only when no column used by an
-- index, as a key or in its predicate, changes value, and the new row version fits on the same
-- page. A call's claim changes status, lease_token, worker_id, lease_expires_at and started_at;
-- a lease extension changes lease_expires_at. With `status` in the predicates of the queued and
-- running indexes and `lease_expires_at` a key, every claim and every extension wrote a new entry
-- into each of the table's indexes: most of the write cost of running a call.
--
-- Calls: the two status indexes are replaced by one index of the unfinished calls (queued or
-- running; `finished_at` is set by whatever finishes or cancels a call), keyed on `enqueued_at`,
-- which neither the claim nor an extension changes. The reconciler reads its candidates from it
-- and tells queued from running and expired from live in the rows themselves: a scan over the
-- calls in flight, never over finished ones.
create index llm_calls_unfinished_idx on llm_calls (enqueued_at) where finished_at is null;
drop index llm_calls_queued_idx;
drop index llm_calls_running_lease_idx;

-- Call ids are time-ordered (UUIDv7), so a job's calls are listed in submission order by
-- (job_id, call_id), which also serves every lookup by job: (job_id, created_at) is redundant.
drop index llm_calls_job_idx;

-- What the index of unfinished calls relies on: a call has a finish time exactly when it is
-- finished. A queued call with one would be invisible to the reconciler. Checked for every row
-- written from now on; rows already stored were all written that way.
alter table llm_calls add constraint llm_calls_finished_at_check
    check ((finished_at is null) = (status in ('queued', 'running'))) not valid;

-- A HOT update also needs room for the new row version on the row's own page; the versions it
-- replaces are pruned only once no transaction sees them and no other process holds the page.
-- Calls are written in submission order and claimed in about that order by many workers at
-- once, so the rows of a page are claimed together. Measured with eight clients claiming
-- neighbouring calls of ~0.8 kB, then extending each lease, then finishing each call with a
-- ~1 kB result (heap after vacuum, relative to fillfactor 100):
--   fillfactor 100: 29% of claims HOT, 87% of extensions, heap 100%
--   fillfactor  80: 42%, 99%, heap 108%
--   fillfactor  70: 60%, 96%, heap 109%
--   fillfactor  60: 80%, 94%, heap 143%
--   fillfactor  50: 100%, 100%, heap 154%
-- Claimed one at a time, every claim and extension was HOT from 80 down. 70 takes most of the
-- gain for a tenth more heap: the result, written once and larger, fills the room a page kept.
-- Pages written before this migration keep their fill until rewritten.
alter table llm_calls set (fillfactor = 70);

-- Jobs: a job goes pending -> in_progress with its first call and in_progress -> completing when
-- asked to complete, each a status change, which `status` in the predicate of the open-expiry
-- index kept from being HOT. A job is open exactly while its credit is held: every step out of
-- pending, in_progress and completing (settle, cancel, expire) also moves `credit_hold` off
-- 'held', in the same guarded update. Keyed on that instead, the index is left alone by the two
-- open steps; the final step changes `credit_hold` anyway (for `jobs_held_idx` too), once.
create index jobs_open_expiry_held_idx on jobs (expires_at) where credit_hold = 'held';
drop index jobs_open_expiry_idx;

-- The same room on the job's page for the versions written by those two steps (completing adds
-- the completion metadata, so its version is the larger).
alter table jobs set (fillfactor = 90);
