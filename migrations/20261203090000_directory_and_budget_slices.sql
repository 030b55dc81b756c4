-- API processes cache who a key belongs to and what its team may use. Any change to keys, teams,
-- grants or model groups announces itself on one channel when it commits, whatever code path made
-- it: the payload is the team's id, or '*' when a model group changed (it may be granted to any
-- number of teams). pg_notify folds identical payloads of one transaction into one.
create function saasllm_directory_changed() returns trigger language plpgsql as $$
declare
    changed record;
begin
    if tg_op = 'DELETE' then
        changed := old;
    else
        changed := new;
    end if;
    if tg_table_name in ('model_groups', 'model_group_models') then
        perform pg_notify('saasllm_directory', '*');
    else
        perform pg_notify('saasllm_directory', changed.team_id);
        if tg_op = 'UPDATE' and old.team_id is distinct from new.team_id then
            perform pg_notify('saasllm_directory', old.team_id);
        end if;
    end if;
    return null;
end
$$;

create trigger teams_directory_changed after update or delete on teams
    for each row execute function saasllm_directory_changed();
create trigger virtual_keys_directory_changed after insert or update or delete on virtual_keys
    for each row execute function saasllm_directory_changed();
create trigger team_model_groups_directory_changed after insert or update or delete on team_model_groups
    for each row execute function saasllm_directory_changed();
create trigger model_groups_directory_changed after update or delete on model_groups
    for each row execute function saasllm_directory_changed();
create trigger model_group_models_directory_changed after insert or update or delete on model_group_models
    for each row execute function saasllm_directory_changed();

-- Budget slices of the OpenAI-compatible path: an API process reserves part of a team's remaining
-- USD budget in one update (counted in credit_balances.budget_reserved_micro_usd), admits requests
-- against it in memory, and moves what they cost to the team's spend in batches. A slice lives
-- until `expires_at` unless its process renews it; the reconciler returns expired slices, so the
-- budget parked in a dead process comes back.
create table budget_slices (
    slice_id           uuid        primary key,
    team_id            text        not null,
    -- Which process holds it (host and pid), for operators.
    holder             text        not null,
    reserved_micro_usd bigint      not null,
    created_at         timestamptz not null default now(),
    expires_at         timestamptz not null,
    constraint budget_slices_team_fkey foreign key (team_id) references teams (team_id) on delete cascade,
    constraint budget_slices_reserved_nonnegative check (reserved_micro_usd >= 0)
);
create index budget_slices_team_idx on budget_slices (team_id);
create index budget_slices_expires_idx on budget_slices (expires_at);
