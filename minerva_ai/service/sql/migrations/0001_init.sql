-- Organizations, API tokens, features and versioned feature settings.

CREATE TABLE organizations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name             text NOT NULL,
    token_hash       bytea NOT NULL UNIQUE,
    scopes           text[] NOT NULL
        CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'ingest', 'write', 'admin']),
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_used_at     timestamptz,
    revoked_at       timestamptz
);
CREATE INDEX api_tokens_organization_idx ON api_tokens (organization_id, created_at);

CREATE TABLE features (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id   uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name              text NOT NULL,
    display_name      text NOT NULL,
    description       text NOT NULL DEFAULT '',
    status            text NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'inactive', 'maintenance')),
    settings_version  integer NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, name)
);

CREATE TABLE feature_settings (
    feature_id       uuid NOT NULL REFERENCES features (id) ON DELETE CASCADE,
    version          integer NOT NULL CHECK (version > 0),
    settings         json NOT NULL,  -- json, not jsonb: keeps the order keys were written in
    diff             json NOT NULL DEFAULT '[]',
    author_token_id  uuid REFERENCES api_tokens (id) ON DELETE SET NULL,
    author_name      text NOT NULL,
    rollback_of      integer,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (feature_id, version)
);
