-- Replaced by deliveries_pending (migration 12); see there for why this is a migration of its own.
DROP INDEX deliveries_due;
