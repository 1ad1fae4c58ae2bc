-- Each relationship manager's and each agency's book, month by month (features.book_performance):
-- customers and their products as held at the month's end, the products opened and closed in it, those used
-- (a transaction the activity filter counts), the money in and out, and the customers who left.
-- A customer's agency is their own agency_id, else their manager's.
-- $1 first month, $2 last month (first days; at most 62 months apart); the activity filter is a validated SQL
-- expression on raw.transactions (features.book.activity_filter), the one part not bound.
-- Months are bits of a 64-bit mask per account and per customer (bit m: the m-th month from $1), so no table
-- grows to accounts x months or keeps a hash of them: the 1M-customer bank fits in a few hundred MB.
WITH span AS (
    SELECT $1::DATE AS first, datediff('month', $1::DATE, $2::DATE)::INTEGER + 1 AS n
), book AS (
    SELECT c.customer_id, c.manager_id, coalesce(c.agency_id, m.agency_id) AS agency_id
    FROM raw.customers c LEFT JOIN raw.managers m USING (manager_id)
    WHERE c.manager_id IS NOT NULL OR coalesce(c.agency_id, m.agency_id) IS NOT NULL
), counted AS NOT MATERIALIZED (  -- read three times below: scanned each time, never held
    SELECT t.customer_id, t.account_id, datediff('month', s.first, t.transaction_date)::INTEGER AS m, t.amount
    FROM raw.transactions t, span s
    WHERE t.transaction_date >= $1::DATE AND t.transaction_date < $2::DATE + INTERVAL 1 MONTH AND ({activity})
), account_use AS (
    SELECT account_id, bit_or(1::BIGINT << m) AS used FROM counted WHERE account_id IS NOT NULL GROUP BY account_id
), customer_use AS (
    SELECT customer_id, bit_or(1::BIGINT << m) AS used FROM counted GROUP BY customer_id
), flows AS (
    -- money summed as decimals: exact, so the book is the same bits whichever thread adds which rows
    SELECT b.manager_id, b.agency_id, c.m, count(*) AS transactions, sum(c.amount::DECIMAL(18, 4)) AS net_flow
    FROM counted c JOIN book b USING (customer_id) GROUP BY ALL
), accounts AS (
    -- the month it was opened (o; before the first when unknown) and closed (c; none while open)
    SELECT a.account_id, a.customer_id, b.manager_id, b.agency_id, s.n,
           coalesce(datediff('month', s.first, a.opened_date)::INTEGER, -1) AS o,
           datediff('month', s.first, a.closed_date)::INTEGER AS c
    FROM raw.accounts a JOIN book b USING (customer_id), span s
), account_masks AS (
    -- held at the end of month m: opened in or before it, not closed in or before it
    SELECT x.customer_id, x.manager_id, x.agency_id,
           CASE WHEN hi >= lo THEN ((1::BIGINT << (hi + 1)) - 1) & ~((1::BIGINT << lo) - 1) ELSE 0 END AS held,
           CASE WHEN o BETWEEN 0 AND n - 1 THEN 1::BIGINT << o ELSE 0 END AS opened,
           CASE WHEN c BETWEEN 0 AND n - 1 THEN 1::BIGINT << c ELSE 0 END AS closed,
           coalesce(u.used, 0) AS used
    FROM (SELECT *, greatest(o, 0) AS lo, least(coalesce(c - 1, n - 1), n - 1) AS hi FROM accounts) x
    LEFT JOIN account_use u USING (account_id)
), customer_masks AS (
    SELECT a.customer_id, any_value(a.manager_id) AS manager_id, any_value(a.agency_id) AS agency_id,
           bit_or(a.held) AS held
    FROM account_masks a GROUP BY a.customer_id
), left_bank AS (
    SELECT l.customer_id, bit_or(1::BIGINT << datediff('month', s.first, l.label_date)::INTEGER) AS churned
    FROM raw.labels l, span s
    WHERE l.label = 'churned' AND l.value = 1
      AND l.label_date >= $1::DATE AND l.label_date < $2::DATE + INTERVAL 1 MONTH
    GROUP BY l.customer_id
), months AS (
    SELECT range::INTEGER AS m FROM span, range(0, span.n)
), products AS (
    SELECT m.m, a.manager_id, a.agency_id, GROUPING(a.manager_id) AS agency_level,
           count(*) FILTER (WHERE (a.held >> m.m) & 1 = 1) AS products_held,
           count(*) FILTER (WHERE (a.held & a.used) >> m.m & 1 = 1) AS products_active,
           count(*) FILTER (WHERE (a.opened >> m.m) & 1 = 1) AS new_products,
           count(*) FILTER (WHERE (a.closed >> m.m) & 1 = 1) AS closed_products
    FROM account_masks a CROSS JOIN months m
    GROUP BY GROUPING SETS ((m.m, a.manager_id), (m.m, a.agency_id))
), clients AS (
    SELECT m.m, c.manager_id, c.agency_id, GROUPING(c.manager_id) AS agency_level,
           count(*) FILTER (WHERE (c.held >> m.m) & 1 = 1) AS clients,
           count(*) FILTER (WHERE (coalesce(u.used, 0) >> m.m) & 1 = 1) AS active_clients,
           count(*) FILTER (WHERE (coalesce(l.churned, 0) >> m.m) & 1 = 1) AS churned_clients
    FROM customer_masks c
    LEFT JOIN customer_use u USING (customer_id)
    LEFT JOIN left_bank l USING (customer_id)
    CROSS JOIN months m
    GROUP BY GROUPING SETS ((m.m, c.manager_id), (m.m, c.agency_id))
), money AS (
    SELECT m, manager_id, agency_id, GROUPING(manager_id) AS agency_level, sum(transactions) AS transactions,
           sum(net_flow) AS net_flow
    FROM flows GROUP BY GROUPING SETS ((m, manager_id), (m, agency_id))
)
SELECT CASE WHEN p.agency_level = 1 THEN 'agency' ELSE 'manager' END AS level,
       CASE WHEN p.agency_level = 1 THEN p.agency_id ELSE p.manager_id END AS entity_id,
       CASE WHEN p.agency_level = 1 THEN p.agency_id ELSE mg.agency_id END AS agency_id,
       (s.first + to_months(p.m))::DATE AS period,
       coalesce(c.clients, 0) AS clients, p.products_held, p.products_active, p.new_products, p.closed_products,
       coalesce(c.active_clients, 0) AS active_clients, coalesce(c.churned_clients, 0) AS churned_clients,
       coalesce(y.transactions, 0) AS transactions, coalesce(y.net_flow, 0)::DOUBLE AS net_flow
FROM products p
CROSS JOIN span s
LEFT JOIN clients c ON c.m = p.m AND c.agency_level = p.agency_level
                   AND c.manager_id IS NOT DISTINCT FROM p.manager_id AND c.agency_id IS NOT DISTINCT FROM p.agency_id
LEFT JOIN money y ON y.m = p.m AND y.agency_level = p.agency_level
                 AND y.manager_id IS NOT DISTINCT FROM p.manager_id AND y.agency_id IS NOT DISTINCT FROM p.agency_id
LEFT JOIN raw.managers mg ON p.agency_level = 0 AND mg.manager_id = p.manager_id
WHERE CASE WHEN p.agency_level = 1 THEN p.agency_id ELSE p.manager_id END IS NOT NULL
ORDER BY level, entity_id, period
