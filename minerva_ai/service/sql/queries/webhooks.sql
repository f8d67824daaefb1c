-- name: create_webhook
INSERT INTO webhooks (organization_id, name, url, format, feature_ids, min_severity, labels,
                      created_by, created_at)
VALUES (%(organization_id)s, %(name)s, %(url)s, %(format)s, %(feature_ids)s, %(min_severity)s,
        %(labels)s, %(created_by)s, %(now)s)
ON CONFLICT (organization_id, name) DO NOTHING
RETURNING id;

-- name: add_webhook_secret
INSERT INTO webhook_secrets (webhook_id, encrypted, created_at)
VALUES (%(webhook_id)s, %(encrypted)s, %(now)s);

-- name: retire_webhook_secrets
-- A rotation: the current secret signs until `until`; older ones stop now.
WITH gone AS (
    DELETE FROM webhook_secrets WHERE webhook_id = %(webhook_id)s AND expires_at IS NOT NULL
)
UPDATE webhook_secrets SET expires_at = %(until)s
WHERE webhook_id = %(webhook_id)s AND expires_at IS NULL;

-- name: list_webhooks
SELECT w.id, w.name, w.url, w.format, w.feature_ids, w.min_severity, w.labels, w.created_by,
       w.created_at,
       (SELECT max(s.created_at) FROM webhook_secrets s WHERE s.webhook_id = w.id)
           AS secret_created_at,
       (SELECT max(s.expires_at) FROM webhook_secrets s
        WHERE s.webhook_id = w.id AND s.expires_at > %(now)s) AS previous_secret_expires_at
FROM webhooks w
WHERE w.organization_id = %(organization_id)s
  AND (%(id)s::uuid IS NULL OR w.id = %(id)s)
ORDER BY w.created_at, w.id;

-- name: lock_webhook
SELECT id, name FROM webhooks
WHERE id = %(id)s AND organization_id = %(organization_id)s
FOR UPDATE;

-- name: delete_webhook
-- Its pending deliveries will not be sent; their history stays, with the webhook's name.
WITH dropped AS (
    UPDATE webhook_deliveries SET state = 'failed', next_attempt_at = NULL
    WHERE webhook_id = %(id)s AND state = 'pending'
)
DELETE FROM webhooks WHERE id = %(id)s AND organization_id = %(organization_id)s
RETURNING id, name;

-- name: active_webhook_secrets
SELECT encrypted FROM webhook_secrets
WHERE webhook_id = %(webhook_id)s AND (expires_at IS NULL OR expires_at > %(now)s)
ORDER BY created_at DESC, id;

-- name: fan_out_notifications
-- The outbox's undispatched notifications become a delivery per matching webhook (none when
-- silenced), and are marked dispatched, in the job's fenced transaction.
WITH picked AS (
    SELECT n.id, n.organization_id, n.alert_id, n.event, n.severity, n.payload,
           (n.silenced_by IS NULL AND n.silenced_reason IS NULL) AS sendable
    FROM alert_notifications n
    WHERE NOT n.dispatched
    ORDER BY n.created_at, n.id
    LIMIT 500
    FOR UPDATE SKIP LOCKED
), fanned AS (
    INSERT INTO webhook_deliveries (organization_id, webhook_id, webhook_name, notification_id,
                                    alert_id, event_id, event, payload, state, next_attempt_at,
                                    created_at)
    SELECT p.organization_id, w.id, w.name, p.id, p.alert_id, p.id,
           coalesce(p.payload ->> 'type', p.event), p.payload, 'pending', %(now)s, %(now)s
    FROM picked p
    JOIN alerts a ON a.id = p.alert_id
    JOIN webhooks w ON w.organization_id = p.organization_id
    WHERE p.sendable
      AND (cardinality(w.feature_ids) = 0 OR a.feature_id = ANY (w.feature_ids))
      AND coalesce(array_position(ARRAY['info', 'warning', 'critical'], p.severity), 3)
          >= array_position(ARRAY['info', 'warning', 'critical'], w.min_severity)
      AND a.labels @> w.labels
    ON CONFLICT (webhook_id, event_id) DO NOTHING
    RETURNING 1
), marked AS (
    UPDATE alert_notifications SET dispatched = true
    WHERE id IN (SELECT id FROM picked)
    RETURNING 1
)
SELECT (SELECT count(*) FROM marked) AS notifications,
       (SELECT count(*) FROM fanned) AS deliveries;

-- name: claim_webhook_deliveries
-- Due deliveries, claimed until `claimed_until`: a leader that dies mid-attempt leaves them
-- due again then, and the next leader sends them (with the same webhook-id).
WITH due AS (
    SELECT d.id FROM webhook_deliveries d
    JOIN webhooks w ON w.id = d.webhook_id
    WHERE d.state = 'pending' AND d.next_attempt_at <= %(now)s
      AND NOT (d.id = ANY (%(in_flight)s::uuid[]))
    ORDER BY d.next_attempt_at, d.id
    LIMIT %(limit)s
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries d SET next_attempt_at = %(claimed_until)s
FROM due, webhooks w
WHERE d.id = due.id AND w.id = d.webhook_id
RETURNING d.id, d.event_id, d.event, d.payload, d.attempts, w.id AS webhook_id, w.url,
          w.format;

-- name: create_test_delivery
INSERT INTO webhook_deliveries (organization_id, webhook_id, webhook_name, event_id, event,
                                payload, state, next_attempt_at, created_at)
VALUES (%(organization_id)s, %(webhook_id)s, %(webhook_name)s, %(event_id)s, 'webhook.test',
        %(payload)s, 'pending', NULL, %(now)s)
RETURNING id;

-- name: record_webhook_attempt
WITH recorded AS (
    INSERT INTO webhook_attempts (delivery_id, attempt, at, duration_ms, status_code, error,
                                  next_retry_at)
    VALUES (%(id)s, %(attempt)s, %(at)s, %(duration_ms)s, %(status_code)s, %(error)s,
            %(next_retry_at)s)
)
UPDATE webhook_deliveries
SET attempts = %(attempt)s, state = %(state)s, next_attempt_at = %(next_retry_at)s
WHERE id = %(id)s;

-- name: alert_webhook_deliveries
SELECT d.webhook_id, d.webhook_name AS webhook, d.notification_id, d.event_id, d.event,
       d.state AS delivery_state, a.attempt, a.at, a.duration_ms, a.status_code, a.error,
       a.next_retry_at
FROM webhook_deliveries d
JOIN webhook_attempts a ON a.delivery_id = d.id
WHERE d.organization_id = %(organization_id)s AND d.alert_id = %(alert_id)s
ORDER BY a.at, d.webhook_name, a.attempt;
