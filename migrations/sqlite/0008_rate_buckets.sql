-- A subscription's rate limit as one token bucket shared by every instance: a claim takes
-- tokens under the subscription's claim lock, so `rate_limit` holds across instances (as
-- `max_in_flight` does through the deliveries table).
CREATE TABLE rate_buckets (
    subscription_id TEXT             PRIMARY KEY,
    tokens          DOUBLE PRECISION NOT NULL,
    refilled_at     BIGINT           NOT NULL   -- epoch ms
);
