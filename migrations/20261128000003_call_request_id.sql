-- The x-request-id of the request that submitted a call, so the worker's log lines for the call
-- carry the same id as the API's (one id follows a call across processes).
alter table llm_calls add column request_id text;
