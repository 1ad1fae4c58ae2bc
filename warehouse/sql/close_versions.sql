-- A snapshot delivery closes the open versions of its feed that it no longer holds (the row left the
-- bank's export) and those it replaces with a new version (load rows marked 'replace'). Nothing is deleted.
-- Parameters: the time the versions end, the feed.
UPDATE {store} AS s SET _valid_to = $1
WHERE s._feed = $2
  AND s._valid_to IS NULL
  AND ({skey} NOT IN (SELECT {key} FROM {load}
                      WHERE coalesce(_kind, '') NOT IN ('summary', 'duplicate') AND {key} IS NOT NULL)
       OR {skey} IN (SELECT {key} FROM {load} WHERE _merge = 'replace'))
