-- The claim's index holds only the deliveries waiting to be sent ('pending'), no longer those
-- being sent (as SQLite's state migration 12). Holding both, every claim walked past the
-- deliveries in flight (up to max_in_flight of them, and the dead entries their earlier leases
-- left), and a claim wrote a new entry into it (the claim's update is not HOT: it changes
-- `status`, which the index's predicate names); now the claim writes none there. A delivery whose
-- lease ran out (its sender died) is found through deliveries_in_flight instead.
-- The old index is dropped by migration 13, in a transaction of its own: dropping it here, after
-- the build's SHARE lock, would upgrade this transaction's lock on `deliveries`, and a running
-- instance's pass (a read, then an update waiting behind the build) would deadlock with it.
CREATE INDEX deliveries_pending ON deliveries (subscription_id, next_attempt_at) WHERE status = 'pending';
