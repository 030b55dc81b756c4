-- Signed webhooks: a job may name a callback URL; when it settles, a `job.settled` delivery is
-- written in the same transaction and workers POST it (signed, Standard Webhooks format) until
-- the receiver answers 2xx or the retry window ends. Every attempt is kept.

alter table jobs
    add column callback_url    text,
    -- `whsec_` + base64 of the HMAC key; needed in clear to sign, never returned after creation.
    add column callback_secret text,
    -- A callback is always signed: the URL and its secret come together.
    add constraint jobs_callback_pair_check check ((callback_url is null) = (callback_secret is null));

create table webhook_deliveries (
    delivery_id      uuid primary key,
    job_id           uuid        not null,
    team_id          text        not null,
    event_type       text        not null,
    -- The event body sent, the same bytes on every attempt.
    payload          jsonb       not null,
    url              text        not null,
    status           text        not null default 'pending',
    -- Attempts made so far; also fences the claim of the attempt in flight.
    attempts         integer     not null default 0,
    -- When the next attempt is due; while an attempt is in flight, the end of its claim.
    next_attempt_at  timestamptz not null default now(),
    last_http_status integer,
    last_error       text,
    created_at       timestamptz not null default now(),
    delivered_at     timestamptz,
    constraint webhook_deliveries_job_fkey foreign key (job_id) references jobs (job_id),
    constraint webhook_deliveries_team_fkey foreign key (team_id) references teams (team_id),
    constraint webhook_deliveries_status_check check (status in ('pending', 'delivered', 'failed')),
    constraint webhook_deliveries_attempts_nonnegative check (attempts >= 0),
    -- An event happens once per job: settling twice can never send two events.
    constraint webhook_deliveries_job_event_key unique (job_id, event_type)
);
create index webhook_deliveries_due_idx on webhook_deliveries (next_attempt_at) where status = 'pending';

create table webhook_delivery_attempts (
    delivery_id    uuid        not null,
    attempt_number integer     not null,
    attempted_at   timestamptz not null default now(),
    -- The receiver's status, or null when no answer came (refused, timed out...).
    http_status    integer,
    error          text,
    latency_ms     bigint      not null,
    constraint webhook_delivery_attempts_pkey primary key (delivery_id, attempt_number),
    constraint webhook_delivery_attempts_delivery_fkey foreign key (delivery_id)
        references webhook_deliveries (delivery_id) on delete cascade,
    constraint webhook_delivery_attempts_number_positive check (attempt_number >= 1)
);
