-- Replays: accepted deliveries are kept whatever the volume of others, and found by
-- their payload on any forge's route.
CREATE INDEX deliveries_by_payload ON deliveries (slug, payload);
CREATE INDEX deliveries_by_decision ON deliveries (slug, decision, at_us);
ALTER TABLE git_links ADD COLUMN per_forge_secrets BIGINT NOT NULL DEFAULT 0;
