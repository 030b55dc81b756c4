-- Admin keys with roles, and the audit log of every admin change.

-- Named admin keys besides the bootstrap ADMIN_API_KEY (an owner named 'bootstrap' that is not
-- stored here). Only the SHA-256 of a key is kept, with a short prefix for display. A revoked
-- key stays listed; its name may be reused by a new key. API processes do not cache these rows
-- (admin traffic is low), so a revocation is refused by every process from its commit on.
create table admin_keys (
    admin_key_id uuid        primary key,
    name         text        not null,
    role         text        not null,
    key_hash     bytea       not null,
    key_prefix   text        not null,
    created_at   timestamptz not null default now(),
    -- The admin key id that created it, or 'bootstrap'.
    created_by   text        not null,
    revoked_at   timestamptz,
    constraint admin_keys_hash_key unique (key_hash),
    constraint admin_keys_name_format check (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    constraint admin_keys_name_not_bootstrap check (lower(name) <> 'bootstrap'),
    constraint admin_keys_role_known check (role in ('owner', 'billing', 'viewer'))
);
-- Names tell people apart: unique among the keys in force, whatever their case.
create unique index admin_keys_active_name_key on admin_keys (lower(name)) where revoked_at is null;

-- One row per successful admin change, written in the transaction that made the change, so a
-- change and its row commit (or roll back) together. `before` and `after` are snapshots of the
-- changed object's relevant fields, never secrets (no keys, no key hashes).
create table audit_log (
    audit_id    bigint      generated always as identity primary key,
    created_at  timestamptz not null default now(),
    -- The admin key id, or 'bootstrap'; with the key's name and role at the time.
    actor_id    text        not null,
    actor_name  text        not null,
    actor_role  text        not null,
    -- `<object>.<verb>`, e.g. 'team.suspend'.
    action      text        not null,
    target_type text        not null,
    target_id   text        not null,
    before      jsonb,
    after       jsonb,
    -- The request's X-Request-Id (the client's, or the one the API assigned).
    request_id  text
);
-- Filters of GET /api/audit, each read newest first.
create index audit_log_target_idx on audit_log (target_type, target_id, audit_id desc);
create index audit_log_actor_idx on audit_log (actor_id, audit_id desc);
create index audit_log_created_idx on audit_log (created_at);

-- Append-only: rows can be added, never changed or removed, whatever the client.
create function audit_log_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'audit_log is append-only: % is not allowed', tg_op
        using errcode = 'restrict_violation';
end
$$;

create trigger audit_log_no_update_or_delete before update or delete on audit_log
    for each row execute function audit_log_append_only();
create trigger audit_log_no_truncate before truncate on audit_log
    for each statement execute function audit_log_append_only();
