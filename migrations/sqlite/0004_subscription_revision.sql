-- A counter bumped by every write of a subscription's settings or state, so an API update can
-- apply its fields to the row it read and detect a concurrent write (compare-and-set) instead
-- of overwriting it. The workers' failure clock (failing_since) does not bump it: updates
-- leave that column alone unless they re-enable the subscription.
ALTER TABLE subscriptions ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
