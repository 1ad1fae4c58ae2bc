-- Per-transaction fraud features (features.transaction_features): each transaction measured against its own
-- customer's earlier transactions only, never a later one. Time orders them; transactions booked at the same
-- moment (every row of a date-only export) are ordered by transaction_id, so none sees its later peers.
-- History older than a day before the first scored transaction is folded into one row per customer (count,
-- amount, channels used, last time): only the last day is windowed, which the hour and day counts reach.
-- Parameters: $1 the first booking time scored (older transactions are history only), $2 days of history read,
-- $3 the booking time scored rows end before (NULL: the latest), $4 the share of customers read (1: all; below 1,
-- a hash sample of customers, plus every customer with a transaction labelled fraud in the window, all of whose
-- rows are read): sample_weight is 1 / the chance a row's customer was read, so sums over the sample estimate the
-- whole population's.
WITH window_rows AS (
    SELECT customer_id, fraud FROM raw.transactions
    WHERE transaction_date >= $1 AND ($3 IS NULL OR transaction_date < $3)
), defrauded AS (
    SELECT DISTINCT customer_id FROM window_rows WHERE fraud
), scored_customers AS (
    SELECT DISTINCT w.customer_id, d.customer_id IS NOT NULL AS _kept
    FROM window_rows w LEFT JOIN defrauded d USING (customer_id)
    WHERE CAST($4 AS DOUBLE) >= 1 OR d.customer_id IS NOT NULL
       OR hash(w.customer_id) % 1000000 < CAST($4 AS DOUBLE) * 1000000
), ordered AS (  -- the last day of history (at most $2 days) and everything scored, in time order per customer
    SELECT t.*,
           epoch(t.transaction_date)
             + (row_number() OVER (PARTITION BY t.customer_id, t.transaction_date ORDER BY t.transaction_id) - 1)
               * 1e-4 AS _t
    FROM raw.transactions t SEMI JOIN scored_customers USING (customer_id)
    WHERE t.transaction_date >= $1 - to_days(least(1, CAST($2 AS INTEGER)))
      AND ($3 IS NULL OR t.transaction_date < $3)
), folded AS (  -- everything older, within $2 days: one row per customer
    SELECT customer_id, count(*) AS _n, sum(abs(amount)) AS _total, list(DISTINCT channel) AS _channels,
           list(DISTINCT counterparty) FILTER (WHERE counterparty IS NOT NULL) AS _counterparties,
           max(transaction_date) AS _last
    FROM raw.transactions t SEMI JOIN scored_customers USING (customer_id)
    WHERE t.transaction_date >= $1 - to_days(CAST($2 AS INTEGER))
      AND t.transaction_date < $1 - to_days(least(1, CAST($2 AS INTEGER)))
    GROUP BY customer_id
), windowed AS (
    SELECT o.*, s._kept,
           coalesce(f._n, 0) + count(*) OVER earlier AS _before,
           (coalesce(f._total, 0) + coalesce(sum(abs(o.amount)) OVER earlier, 0))
             / nullif(coalesce(f._n, 0) + count(*) OVER earlier, 0) AS _usual,
           count(*) OVER last_hour - 1 AS _hour_count,
           count(*) OVER last_day - 1 AS _day_count,
           sum(abs(o.amount)) OVER last_day - abs(o.amount) AS _day_amount,
           epoch(o.transaction_date) - epoch(coalesce(lag(o.transaction_date) OVER by_time, f._last)) AS _gap,
           o.channel IS NOT NULL AND NOT coalesce(list_contains(f._channels, o.channel), false)
             AND row_number() OVER (PARTITION BY o.customer_id, o.channel ORDER BY o._t) = 1 AS _new_channel,
           NOT coalesce(list_contains(f._counterparties, o.counterparty), false)
             AND row_number() OVER (PARTITION BY o.customer_id, o.counterparty ORDER BY o._t) = 1 AS _new_counterparty
    FROM ordered o LEFT JOIN folded f USING (customer_id) JOIN scored_customers s USING (customer_id)
    WINDOW by_time AS (PARTITION BY o.customer_id ORDER BY o._t),
           earlier AS (PARTITION BY o.customer_id ORDER BY o._t ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
           last_hour AS (PARTITION BY o.customer_id ORDER BY o._t RANGE BETWEEN 3600 PRECEDING AND CURRENT ROW),
           last_day AS (PARTITION BY o.customer_id ORDER BY o._t RANGE BETWEEN 86400 PRECEDING AND CURRENT ROW)
)
SELECT transaction_id, customer_id, transaction_date AS booked_at,
       abs(amount) AS amount,
       CAST(amount < 0 AS INTEGER) AS is_debit,
       hour(transaction_date) AS hour,
       isodow(transaction_date) AS day_of_week,
       channel, category,
       abs(amount) / nullif(_usual, 0) AS amount_vs_usual,
       _before AS txn_before,
       _hour_count AS txn_last_hour,
       _day_count AS txn_last_day,
       _day_amount AS amount_last_day,
       _gap AS seconds_since_last,
       CAST(_new_channel AND _before > 0 AS INTEGER) AS new_channel,
       CASE WHEN counterparty IS NOT NULL THEN CAST(_new_counterparty AND _before > 0 AS INTEGER) END AS new_counterparty,
       CASE WHEN CAST($4 AS DOUBLE) >= 1 OR _kept THEN 1.0 ELSE 1.0 / CAST($4 AS DOUBLE) END AS sample_weight,
       -- the source's own extra columns (e.g. a card processor's risk signals), as delivered
       * EXCLUDE (transaction_id, customer_id, account_id, transaction_date, amount, category, channel, balance_after,
                  quantity, counterparty, fraud, _source_file, _source_row, _ingested_at, _delivery_id, _t, _before, _usual, _hour_count,
                  _day_count, _day_amount, _gap, _new_channel, _new_counterparty, _kept),
       fraud
FROM windowed
WHERE transaction_date >= $1
ORDER BY booked_at, transaction_id
