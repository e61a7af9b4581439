-- How a subscription's deliveries carry the body: 'raw' (the stored bytes, as Zoom sent them) or
-- 'compact' (zoom scheme only: JSON.stringify(JSON.parse(body)), signed over those bytes, for
-- consumers such as @zoom/rivet that verify over that form). Existing subscriptions keep 'raw'.
ALTER TABLE subscriptions ADD COLUMN body_format TEXT NOT NULL DEFAULT 'raw';
