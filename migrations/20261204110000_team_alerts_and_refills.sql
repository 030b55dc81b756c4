-- Per-team alerts (low credits, budget spent) sent as signed webhooks, and scheduled credit
-- grants and budget periods applied by the reconciler. Both live in tables of their own, so
-- changing them never touches the `teams` row (whose updates notify every API process) nor the
-- hot balance row.

-- Alert settings and, per threshold, its state: armed while `*_fired_at` is null, fired from the
-- crossing until the value is back on the safe side. Firing is a guarded update (armed -> fired)
-- in the transaction that queues the delivery, so one crossing sends one event however many
-- reconcilers run.
create table team_alerts (
    team_id              text        primary key,
    -- Where events are POSTed; null while no threshold is set.
    url                  text,
    -- `whsec_` + base64 of the HMAC key; needed in clear to sign, returned only when set. Kept
    -- while alerts are off, so deliveries still pending can be signed.
    secret               text        not null,
    -- Fires when the team's available credits (allocated - used - reserved) go below this.
    credits_below        bigint,
    -- Fires when the /v1 spend reaches this percent of the team's USD budget.
    budget_spend_pct     smallint,
    -- USD per credit of the deployment when the alert was set (the budget is credits x this);
    -- the worker that evaluates alerts does not carry the API's billing settings.
    usd_per_credit_micro bigint      not null,
    credits_fired_at     timestamptz,
    budget_fired_at      timestamptz,
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now(),
    constraint team_alerts_team_fkey foreign key (team_id) references teams (team_id) on delete cascade,
    constraint team_alerts_credits_below_range check (credits_below between 1 and 1000000000),
    constraint team_alerts_budget_pct_range check (budget_spend_pct between 1 and 100),
    constraint team_alerts_rate_nonnegative check (usd_per_credit_micro >= 0),
    constraint team_alerts_url_when_on check (
        url is not null or (credits_below is null and budget_spend_pct is null))
);

-- Scheduled grants and budget periods. Boundaries fall at anchor + k x period (k = 1, 2, ...;
-- `1mo` is a calendar month in UTC, clamped to the month's last day); `next_*_at` is the next
-- one due. The reconciler applies a due boundary with a guarded update
-- (`where next_grant_at = <the value it read>`) in the transaction of the balance change, so each
-- boundary is applied once whatever the number of reconcilers.
create table team_refills (
    team_id              text        primary key,
    grant_credits        bigint,
    grant_period         text,
    grant_anchor         timestamptz,
    next_grant_at        timestamptz,
    last_grant_at        timestamptz,
    budget_duration      text,
    budget_anchor        timestamptz,
    next_budget_reset_at timestamptz,
    last_budget_reset_at timestamptz,
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now(),
    constraint team_refills_team_fkey foreign key (team_id) references teams (team_id) on delete cascade,
    constraint team_refills_grant_credits_range check (grant_credits between 1 and 1000000),
    constraint team_refills_grant_period_known check (grant_period in ('1d', '7d', '30d', '1mo')),
    constraint team_refills_budget_duration_known check (budget_duration in ('1d', '7d', '30d', '1mo')),
    constraint team_refills_grant_complete check (
        (grant_credits is null) = (grant_period is null)
        and (grant_period is null) = (grant_anchor is null)
        and (grant_period is null) = (next_grant_at is null)),
    constraint team_refills_budget_complete check (
        (budget_duration is null) = (budget_anchor is null)
        and (budget_duration is null) = (next_budget_reset_at is null))
);
create index team_refills_next_grant_idx on team_refills (next_grant_at) where next_grant_at is not null;
create index team_refills_next_budget_reset_idx on team_refills (next_budget_reset_at)
    where next_budget_reset_at is not null;

-- A scheduled grant is a ledger row of its own kind.
alter table credit_transactions drop constraint credit_transactions_type_check;
alter table credit_transactions add constraint credit_transactions_type_check check (
    transaction_type in ('allocation', 'addition', 'deduction', 'refund', 'refill'));
-- Belt and braces beside the schedule's guarded update: one grant per team and boundary.
create unique index credit_transactions_refill_once on credit_transactions (team_id, (metadata ->> 'due_at'))
    where transaction_type = 'refill';

-- Each budget reset and the spend it cleared, so the spend stays accounted for:
-- spend_micro_usd + the resets' cleared spend = the costs in spend_records.
create table budget_resets (
    reset_id                uuid        primary key,
    team_id                 text        not null,
    -- The boundary that was due (a reset after downtime covers every boundary up to now).
    due_at                  timestamptz not null,
    spend_cleared_micro_usd bigint      not null,
    created_at              timestamptz not null default now(),
    constraint budget_resets_team_fkey foreign key (team_id) references teams (team_id) on delete cascade,
    constraint budget_resets_cleared_nonnegative check (spend_cleared_micro_usd >= 0),
    constraint budget_resets_team_due_key unique (team_id, due_at)
);

-- Team events (alerts) have no job.
alter table webhook_deliveries alter column job_id drop not null;
alter table webhook_deliveries add constraint webhook_deliveries_subject_check
    check (job_id is not null or event_type like 'team.%');
