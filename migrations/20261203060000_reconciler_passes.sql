-- When the last reconciler pass started, for the whole fleet: every worker process runs the
-- reconciler loop, but one pass per interval is enough, whatever the number of workers (a pass
-- scans every unfinished call). One row.
create table reconciler_passes (
    singleton boolean primary key default true check (singleton),
    last_started_at timestamptz not null default '-infinity'
);
insert into reconciler_passes default values;
