-- Whether a request is waiting for this call's result (a synchronous llm-call): only then does
-- the transaction that writes the result send a notification. A transaction that notifies holds
-- a database-wide lock from just before its commit until after it, so notifying transactions
-- commit one at a time; asynchronous and bulk calls, the bulk of the traffic, commit without.
-- Calls already in the table keep notifying (a request may be waiting for one).
alter table llm_calls add column notify_on_finish boolean not null default true;
alter table llm_calls alter column notify_on_finish set default false;
