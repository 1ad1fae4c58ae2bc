-- The load table's good rows whose key is already held in {current}: where the held row came from, and the
-- columns whose values differ (an empty list: the same row again). When no key is held at all, the caller adds
-- AND false: an empty table of the same columns, made without reading the held rows.
CREATE OR REPLACE TEMP TABLE _match AS
SELECT {row} AS _row,
       {lkey} AS _key,
       r._source_file AS previous_file,
       r._source_row AS previous_row,
       list_filter([{changed}], lambda x: x IS NOT NULL)::VARCHAR[] AS changed
FROM {load} l
JOIN {current} r ON {lkey} = {rkey}
WHERE l._reason IS NULL{none}
