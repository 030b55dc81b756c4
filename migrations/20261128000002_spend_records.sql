-- OpenAI-compatible path: one row per request, holding the reserved estimate until the actual
-- cost replaces it. Amounts are micro-dollars.
create table spend_records (
    request_id         uuid primary key,
    team_id            text        not null,
    model              text        not null,
    stream             boolean     not null,
    status             text        not null default 'reserved',
    reserved_micro_usd bigint      not null,
    prompt_tokens      bigint,
    completion_tokens  bigint,
    total_tokens       bigint,
    cost_micro_usd     bigint,
    cost_source        text,
    http_status        integer,
    error              text,
    created_at         timestamptz not null default now(),
    finished_at        timestamptz,
    constraint spend_records_team_fkey foreign key (team_id) references teams (team_id),
    constraint spend_records_status_check check (status in ('reserved', 'recorded', 'released')),
    constraint spend_records_cost_source_check check (cost_source in ('header', 'price_table', 'default_price')),
    constraint spend_records_amounts_check check (reserved_micro_usd >= 0 and coalesce(cost_micro_usd, 0) >= 0)
);
create index spend_records_team_created_idx on spend_records (team_id, created_at desc);
create index spend_records_open_idx on spend_records (created_at) where status = 'reserved';
