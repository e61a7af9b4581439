-- Deliveries being sent, per subscription: each claim counts them so that max_in_flight holds
-- across every instance sharing the store (the due index would scan the whole backlog).
CREATE INDEX deliveries_in_flight ON deliveries (subscription_id, locked_until) WHERE status = 'delivering';
