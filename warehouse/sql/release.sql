-- Quarantined rows whose customer has arrived (temp table _release) are marked released.
-- Parameters: when, the releasing run.
UPDATE quarantine.{table} AS q SET released_at = $1, released_run_id = $2
FROM _release r
WHERE q.kind = 'orphan'
  AND q.delivery_id = r._delivery_id
  AND q._source_file = r._source_file
  AND q._source_row = r._source_row
