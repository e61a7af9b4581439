-- The keys the append path indexes compare byte by byte ("C"), as SQLite's do.
--
-- Under the database's default collation (en_US.UTF-8, or even C.UTF-8 before PostgreSQL 17)
-- every B-tree comparison of these columns goes through strcoll: measured on the append's
-- backend, text comparison was ~8 % of its CPU and a database created with LC_COLLATE 'C'
-- ingested ~7 % faster (bench/RESULTS.md, 2026-12-07). Nothing orders by these columns for
-- people to read; equality is the same under every deterministic collation.
--
-- Only the collation changes, so no table is rewritten, but every index on these columns is
-- rebuilt under an exclusive lock on its table. The columns' type changes all the same: an
-- instance still running keeps statements prepared before it, which PostgreSQL then refuses
-- ("cached plan must not change result type"). Stop every instance first (docs/deploy.md).
ALTER TABLE events
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN event TYPE TEXT COLLATE "C",
    ALTER COLUMN object_id TYPE TEXT COLLATE "C",
    ALTER COLUMN object_uuid TYPE TEXT COLLATE "C";
ALTER TABLE dedupe_keys ALTER COLUMN key TYPE TEXT COLLATE "C";
