-- The refused rows of the load table into quarantine.{table}: file, row, reasons, the columns they name, the
-- row as it was read (JSON), when, by which run, what kind of problem, in which delivery.
INSERT INTO quarantine.{table}
SELECT t._source_file,
       {row},
       t._reason,
       CASE WHEN t._kind IN ('duplicate', 'correction') THEN {key_list}
            WHEN t._kind IN ('summary', 'truncated') THEN ['(line)']
            ELSE list_distinct(regexp_extract_all(t._reason, '(?:^|; )([A-Za-z0-9_]+):', 1)) END,
       coalesce(t._record, to_json({{{as_struct}}})::VARCHAR),
       ?::TIMESTAMP,
       ?,
       t._kind,
       t._delivery_id,
       NULL,
       NULL
FROM {load} t
WHERE t._reason IS NOT NULL
ORDER BY 2
