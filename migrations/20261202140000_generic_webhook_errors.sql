-- Webhook attempt errors are shown to the tenant, so they are now generic words ("connection
-- failed", "timed out", "request failed"); earlier attempts recorded the operating system's error
-- after a colon ("connection failed: Connection refused (os error 111)"), which tells a tenant
-- what listens inside the deployment. Those are cut back to the generic part.
update webhook_delivery_attempts set error = 'connection failed' where error like 'connection failed:%';
update webhook_delivery_attempts set error = 'request failed' where error like 'request failed:%';
update webhook_delivery_attempts set error = 'timed out' where error like 'no answer within %';
update webhook_deliveries set last_error = 'connection failed' where last_error like 'connection failed:%';
update webhook_deliveries set last_error = 'request failed' where last_error like 'request failed:%';
update webhook_deliveries set last_error = 'timed out' where last_error like 'no answer within %';
