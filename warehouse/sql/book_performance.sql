-- Each relationship manager's and each agency's book, month by month (features.book_performance):
-- customers and their products as held at the month's end, the products opened and closed in it, those used
-- (a transaction the activity filter counts), the money in and out, and the customers who left.
-- A customer's agency is their own agency_id, else their manager's.
-- $1 first month, $2 last month (first days); the activity filter is a validated SQL expression on
-- raw.transactions (models.performance.activity_filter), the one part not bound.
WITH months AS (
    SELECT unnest(generate_series($1::DATE, $2::DATE, INTERVAL 1 MONTH))::DATE AS period
), book AS (
    SELECT c.customer_id, c.manager_id, coalesce(c.agency_id, m.agency_id) AS agency_id
    FROM raw.customers c LEFT JOIN raw.managers m USING (manager_id)
    WHERE c.manager_id IS NOT NULL OR coalesce(c.agency_id, m.agency_id) IS NOT NULL
), accounts AS (
    SELECT a.account_id, a.customer_id, a.opened_date, a.closed_date, b.manager_id, b.agency_id
    FROM raw.accounts a JOIN book b USING (customer_id)
), used AS (
    -- money summed as decimals: exact, so the book is the same bits whichever thread adds which rows
    SELECT account_id, date_trunc('month', transaction_date)::DATE AS period, count(*) AS transactions,
           sum(amount::DECIMAL(18, 4)) AS net_flow
    FROM raw.transactions
    WHERE transaction_date >= $1::DATE AND transaction_date < $2::DATE + INTERVAL 1 MONTH AND account_id IS NOT NULL
      AND ({activity})
    GROUP BY ALL
), left_bank AS (
    SELECT customer_id, date_trunc('month', label_date)::DATE AS period
    FROM raw.labels WHERE label = 'churned' AND value = 1 AND label_date IS NOT NULL
), account_months AS (
    -- each account once per month it was open in (no range join: a series per account)
    SELECT a.*, unnest(generate_series(greatest(date_trunc('month', coalesce(a.opened_date, $1::DATE)), $1::DATE),
                                       least(date_trunc('month', coalesce(a.closed_date, $2::DATE)), $2::DATE),
                                       INTERVAL 1 MONTH))::DATE AS period
    FROM accounts a
    WHERE (a.opened_date IS NULL OR a.opened_date < $2::DATE + INTERVAL 1 MONTH)
      AND (a.closed_date IS NULL OR a.closed_date >= $1::DATE)
), facts AS (
    SELECT am.period, am.manager_id, am.agency_id, am.customer_id,
           am.closed_date IS NULL OR am.closed_date >= am.period + INTERVAL 1 MONTH AS held,
           am.opened_date >= am.period AS opened,
           am.closed_date < am.period + INTERVAL 1 MONTH AS closed,
           coalesce(u.transactions, 0) AS transactions, coalesce(u.net_flow, 0) AS net_flow,
           l.customer_id IS NOT NULL AS churned
    FROM account_months am
    LEFT JOIN used u ON u.account_id = am.account_id AND u.period = am.period
    LEFT JOIN left_bank l ON l.customer_id = am.customer_id AND l.period = am.period
), customer_months AS (  -- one row per customer and month first: counting customers is then a sum
    SELECT period, customer_id, any_value(manager_id) AS manager_id, any_value(agency_id) AS agency_id,
           count(*) FILTER (WHERE held) AS products_held,
           count(*) FILTER (WHERE held AND transactions > 0) AS products_active,
           count(*) FILTER (WHERE opened) AS new_products,
           count(*) FILTER (WHERE closed) AS closed_products,
           sum(transactions) AS transactions, sum(net_flow) AS net_flow, bool_or(churned) AS churned
    FROM facts GROUP BY period, customer_id
), grouped AS (
    SELECT period, manager_id, agency_id, GROUPING(manager_id) AS agency_level,
           count(*) FILTER (WHERE products_held > 0) AS clients,
           sum(products_held) AS products_held,
           sum(products_active) AS products_active,
           sum(new_products) AS new_products,
           sum(closed_products) AS closed_products,
           count(*) FILTER (WHERE transactions > 0) AS active_clients,
           count(*) FILTER (WHERE churned) AS churned_clients,
           sum(transactions) AS transactions,
           sum(net_flow) AS net_flow
    FROM customer_months
    GROUP BY GROUPING SETS ((period, manager_id), (period, agency_id))
)
SELECT CASE WHEN g.agency_level = 1 THEN 'agency' ELSE 'manager' END AS level,
       CASE WHEN g.agency_level = 1 THEN g.agency_id ELSE g.manager_id END AS entity_id,
       CASE WHEN g.agency_level = 1 THEN g.agency_id ELSE mg.agency_id END AS agency_id,
       g.period, g.clients, g.products_held, g.products_active, g.new_products, g.closed_products,
       g.active_clients, g.churned_clients, g.transactions, g.net_flow::DOUBLE AS net_flow
FROM grouped g LEFT JOIN raw.managers mg ON g.agency_level = 0 AND mg.manager_id = g.manager_id
WHERE CASE WHEN g.agency_level = 1 THEN g.agency_id ELSE g.manager_id END IS NOT NULL
ORDER BY level, entity_id, g.period
