-- The claim's index holds only the deliveries waiting to be sent ('pending'), no longer those
-- being sent. Holding both, every claim walked past the deliveries in flight (up to
-- max_in_flight of them, each a lookup of its row for the status and the lease), and each
-- delivery's entry was written at the fan-out, rewritten at the claim and deleted at the
-- outcome; now it is written at the fan-out and deleted at the claim. A delivery whose lease ran
-- out (its sender died) is found through deliveries_in_flight instead.
CREATE INDEX deliveries_pending ON deliveries (subscription_id, next_attempt_at) WHERE status = 'pending';
DROP INDEX deliveries_due;
