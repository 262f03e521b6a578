-- Webhook signing secrets are sealed with the master key like credentials (XChaCha20-Poly1305,
-- associated data "webhook-secret:<id>", so a sealed secret opens only in its own row).
-- SQL cannot encrypt with the operator's key, so this migration only moves plaintext secrets
-- aside into legacy_secret; at start-up the adapter seals every row that still has one and
-- clears it, in one transaction (idempotent). New rows are written sealed.
ALTER TABLE webhooks ADD COLUMN legacy_secret TEXT;
ALTER TABLE webhooks ADD COLUMN sealed_secret BLOB;
ALTER TABLE webhooks ADD COLUMN key_fingerprint TEXT;
UPDATE webhooks SET legacy_secret = secret;
ALTER TABLE webhooks DROP COLUMN secret;
