-- A counter bumped by every write of a subscription row, so an API update can apply its
-- fields to the row it read and detect a concurrent write (compare-and-set) instead of
-- overwriting it.
ALTER TABLE subscriptions ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
