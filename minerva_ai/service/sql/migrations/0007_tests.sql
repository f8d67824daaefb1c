-- Model and prompt tests (POST /features/{id}/test): one row per call, its whole result
-- as JSON and the fields that history filters on as columns. Each attempt is also a log
-- entry with source 'test'.
CREATE TABLE model_tests (
    id                uuid PRIMARY KEY,
    organization_id   uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    feature_id        uuid NOT NULL REFERENCES features (id) ON DELETE CASCADE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    status            text NOT NULL CHECK (status IN ('success', 'error', 'timeout')),
    model             text NOT NULL,
    prompt            text,
    request_id        text NOT NULL,
    result            jsonb NOT NULL
);
CREATE INDEX model_tests_feature_idx ON model_tests (feature_id, created_at DESC, id DESC);
