-- Suite runs (POST /test-runs): one row per `minerva-ai test suite` run, keyed by the suite
-- file's hash and the fingerprint of the feature's models and prompts it ran against. The
-- whole run (its cases and their test ids) is kept as JSON.
CREATE TABLE test_runs (
    id                  uuid PRIMARY KEY,
    organization_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    feature_id          uuid NOT NULL REFERENCES features (id) ON DELETE CASCADE,
    created_at          timestamptz NOT NULL DEFAULT now(),
    suite_hash          text NOT NULL,
    fingerprint         text NOT NULL,
    status              text NOT NULL CHECK (status IN ('passed', 'failed', 'error')),
    pass_rate           float8 NOT NULL,
    required_pass_rate  float8 NOT NULL,
    run                 jsonb NOT NULL
);
CREATE INDEX test_runs_org_idx ON test_runs (organization_id, created_at DESC, id DESC);
CREATE INDEX test_runs_feature_idx ON test_runs (feature_id, fingerprint, created_at DESC);
