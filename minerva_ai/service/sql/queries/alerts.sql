-- name: alert_rule_definitions
-- Every feature with alert rules in its current settings (all organizations, or one).
SELECT f.organization_id, f.id AS feature_id, f.name AS feature, f.status AS feature_status,
       f.settings_version, s.settings -> 'monitoring' -> 'alert_rules' AS rules
FROM features f
JOIN feature_settings s ON s.feature_id = f.id AND s.version = f.settings_version
WHERE (%(organization_id)s::uuid IS NULL OR f.organization_id = %(organization_id)s::uuid)
  AND (%(feature_id)s::uuid IS NULL OR f.id = %(feature_id)s::uuid)
  AND json_typeof(s.settings -> 'monitoring' -> 'alert_rules') = 'array'
  AND json_array_length(s.settings -> 'monitoring' -> 'alert_rules') > 0
ORDER BY f.organization_id, f.name

-- name: alert_rule_states
SELECT * FROM alert_rule_states
WHERE (%(organization_id)s::uuid IS NULL OR organization_id = %(organization_id)s::uuid)
  AND (%(feature_id)s::uuid IS NULL OR feature_id = %(feature_id)s::uuid)

-- name: lock_alert_commits
SELECT pg_advisory_xact_lock(%(lock)s, hashtext(%(organization_id)s::text))

-- name: upsert_alert_rule_state
INSERT INTO alert_rule_states (feature_id, rule, organization_id, state, severity, since,
                               breaching_since, recovered_since, value, reason, evaluated_at,
                               settings_version, definition, alert_id)
VALUES (%(feature_id)s, %(rule)s, %(organization_id)s, %(state)s, %(severity)s, %(since)s,
        %(breaching_since)s, %(recovered_since)s, %(value)s, %(reason)s, %(evaluated_at)s,
        %(settings_version)s, %(definition)s, %(alert_id)s)
ON CONFLICT (feature_id, rule) DO UPDATE SET
    state = excluded.state, severity = excluded.severity, since = excluded.since,
    breaching_since = excluded.breaching_since, recovered_since = excluded.recovered_since,
    value = excluded.value, reason = excluded.reason, evaluated_at = excluded.evaluated_at,
    settings_version = excluded.settings_version, definition = excluded.definition,
    alert_id = excluded.alert_id

-- name: delete_alert_rule_state
DELETE FROM alert_rule_states WHERE feature_id = %(feature_id)s AND rule = %(rule)s

-- name: open_alert
INSERT INTO alerts (organization_id, feature_id, rule, metric, state, severity, value,
                    threshold, labels, runbook_url, settings_version, opened_at)
VALUES (%(organization_id)s, %(feature_id)s, %(rule)s, %(metric)s, 'open', %(severity)s,
        %(value)s, %(threshold)s, %(labels)s, %(runbook_url)s, %(settings_version)s, %(at)s)
RETURNING id

-- name: update_open_alert
UPDATE alerts SET severity = %(severity)s, value = %(value)s,
                  threshold = coalesce(%(threshold)s, threshold)
WHERE id = %(alert_id)s AND state = 'open'

-- name: close_alert
UPDATE alerts SET state = 'resolved', resolved_at = %(at)s, resolved_by = %(actor)s,
                  resolve_note = %(note)s, value = coalesce(%(value)s, value)
WHERE id = %(alert_id)s AND state = 'open'
RETURNING id

-- name: acknowledge_alert
UPDATE alerts SET acknowledged_at = %(at)s, acknowledged_by = %(actor)s,
                  acknowledge_note = %(note)s
WHERE id = %(alert_id)s AND state = 'open' AND acknowledged_at IS NULL
RETURNING id

-- name: alert_notified
UPDATE alerts SET last_notified_at = %(at)s WHERE id = %(alert_id)s

-- name: insert_alert_transition
INSERT INTO alert_transitions (seq, organization_id, feature_id, rule, alert_id, at, event,
                               from_state, to_state, severity, value, threshold, reason,
                               actor, settings_version)
VALUES (nextval('alert_transition_seq'), %(organization_id)s, %(feature_id)s, %(rule)s,
        %(alert_id)s, %(at)s, %(event)s, %(from_state)s, %(to_state)s, %(severity)s,
        %(value)s, %(threshold)s, %(reason)s, %(actor)s, %(settings_version)s)
RETURNING seq, id

-- name: insert_alert_notification
INSERT INTO alert_notifications (id, organization_id, alert_id, transition_seq, event,
                                 created_at, severity, payload, silenced_by, silenced_reason,
                                 dispatched)
VALUES (%(id)s, %(organization_id)s, %(alert_id)s, %(transition_seq)s, %(event)s, %(at)s,
        %(severity)s, %(payload)s, %(silenced_by)s, %(silenced_reason)s, false)

-- name: alerts_by_id
SELECT a.*, f.name AS feature
FROM alerts a JOIN features f ON f.id = a.feature_id
WHERE a.id = ANY(%(ids)s::uuid[])
  AND (%(organization_id)s::uuid IS NULL OR a.organization_id = %(organization_id)s::uuid)

-- name: transition_by_seq
SELECT t.*, f.name AS feature
FROM alert_transitions t JOIN features f ON f.id = t.feature_id
WHERE t.seq = %(seq)s

-- name: active_silences
SELECT * FROM silences
WHERE organization_id = %(organization_id)s AND starts_at <= %(at)s AND ends_at > %(at)s

-- name: renotify_candidates
-- Open, unacknowledged alerts last notified before `due_before` (the shortest renotify).
SELECT a.id, a.feature_id, a.rule, a.opened_at, a.last_notified_at
FROM alerts a
WHERE a.organization_id = %(organization_id)s AND a.state = 'open'
  AND a.acknowledged_at IS NULL
  AND coalesce(a.last_notified_at, a.opened_at) <= %(due_before)s

-- name: max_alert_seq
SELECT coalesce(max(seq), 0) AS seq FROM alert_transitions
WHERE organization_id = %(organization_id)s

-- name: settings_changes_before
-- What changed in a feature's settings in the hour before an alert opened.
SELECT version, created_at, author_name, rollback_of, diff
FROM feature_settings
WHERE feature_id = %(feature_id)s AND created_at > %(since)s AND created_at <= %(until)s
ORDER BY version

-- name: insert_silence
INSERT INTO silences (organization_id, feature_id, rule, severity, labels, starts_at, ends_at,
                      comment, created_by)
VALUES (%(organization_id)s, %(feature_id)s, %(rule)s, %(severity)s, %(labels)s,
        %(starts_at)s, %(ends_at)s, %(comment)s, %(created_by)s)
RETURNING *

-- name: silence_by_id
SELECT s.*, f.name AS feature
FROM silences s LEFT JOIN features f ON f.id = s.feature_id
WHERE s.id = %(id)s

-- name: expire_silence
UPDATE silences SET ends_at = greatest(starts_at + interval '1 microsecond', %(at)s)
WHERE id = %(id)s AND organization_id = %(organization_id)s
RETURNING id

-- name: list_alerts
-- Newest first; keyset pages on (opened_at, id).
SELECT a.*, f.name AS feature
FROM alerts a JOIN features f ON f.id = a.feature_id
WHERE a.organization_id = %(organization_id)s
  AND (%(state)s::text IS NULL OR a.state = %(state)s)
  AND (%(severity)s::text IS NULL OR a.severity = %(severity)s)
  AND (%(feature_id)s::uuid IS NULL OR a.feature_id = %(feature_id)s::uuid)
  AND (%(labels)s::jsonb IS NULL OR a.labels @> %(labels)s::jsonb)
  AND (%(before_opened)s::timestamptz IS NULL
       OR (a.opened_at, a.id) < (%(before_opened)s::timestamptz, %(before_id)s::uuid))
ORDER BY a.opened_at DESC, a.id DESC
LIMIT %(limit)s

-- name: list_alert_transitions
-- Oldest first from a cursor (the `alerts` channel's backfill and the polling fallback).
SELECT t.*, f.name AS feature
FROM alert_transitions t JOIN features f ON f.id = t.feature_id
WHERE t.organization_id = %(organization_id)s AND t.seq > %(after)s
  AND (%(alert_id)s::uuid IS NULL OR t.alert_id = %(alert_id)s::uuid)
ORDER BY t.seq
LIMIT %(limit)s

-- name: list_silences
SELECT s.*, f.name AS feature
FROM silences s LEFT JOIN features f ON f.id = s.feature_id
WHERE s.organization_id = %(organization_id)s
  AND (%(active_at)s::timestamptz IS NULL OR s.ends_at > %(active_at)s::timestamptz)
ORDER BY s.ends_at DESC, s.id
LIMIT %(limit)s
