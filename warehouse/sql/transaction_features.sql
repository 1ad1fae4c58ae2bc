-- Per-transaction fraud features (features.transaction_features): each transaction measured against its own
-- customer's earlier transactions only, never a later one. Time orders them; transactions booked at the same
-- moment (every row of a date-only export) are ordered by transaction_id, so none sees its later peers.
-- Parameters: $1 the first booking time scored (older transactions are history only), $2 days of history read.
CREATE OR REPLACE TABLE features.transaction_features AS
WITH scored_customers AS (
    SELECT DISTINCT customer_id FROM raw.transactions WHERE transaction_date >= $1
), history AS (
    SELECT t.*,
           epoch(t.transaction_date)
             + (row_number() OVER (PARTITION BY t.customer_id, t.transaction_date ORDER BY t.transaction_id) - 1)
               * 1e-4 AS _t
    FROM raw.transactions t SEMI JOIN scored_customers USING (customer_id)
    WHERE t.transaction_date >= $1 - to_days(CAST($2 AS INTEGER))
), windowed AS (
    SELECT *,
           count(*) OVER earlier AS _before,
           avg(abs(amount)) OVER earlier AS _usual,
           count(*) OVER last_hour - 1 AS _hour_count,
           count(*) OVER last_day - 1 AS _day_count,
           sum(abs(amount)) OVER last_day - abs(amount) AS _day_amount,
           _t - lag(_t) OVER by_time AS _gap,
           row_number() OVER (PARTITION BY customer_id, channel ORDER BY _t) AS _channel_use
    FROM history
    WINDOW by_time AS (PARTITION BY customer_id ORDER BY _t),
           earlier AS (PARTITION BY customer_id ORDER BY _t ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
           last_hour AS (PARTITION BY customer_id ORDER BY _t RANGE BETWEEN 3600 PRECEDING AND CURRENT ROW),
           last_day AS (PARTITION BY customer_id ORDER BY _t RANGE BETWEEN 86400 PRECEDING AND CURRENT ROW)
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
       CAST(channel IS NOT NULL AND _channel_use = 1 AND _before > 0 AS INTEGER) AS new_channel,
       -- the source's own extra columns (e.g. a card processor's risk signals), as delivered
       * EXCLUDE (transaction_id, customer_id, account_id, transaction_date, amount, category, channel, balance_after,
                  quantity, _source_file, _source_row, _ingested_at, _delivery_id, _t, _before, _usual, _hour_count,
                  _day_count, _day_amount, _gap, _channel_use)
FROM windowed
WHERE transaction_date >= $1
ORDER BY booked_at, transaction_id
