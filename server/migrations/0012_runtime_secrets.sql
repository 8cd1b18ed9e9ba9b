-- Stored secrets a server app's server gets at run time too (builds get every one).
ALTER TABLE secrets ADD COLUMN runtime BIGINT NOT NULL DEFAULT 0;
