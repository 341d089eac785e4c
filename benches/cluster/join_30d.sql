-- The join-heavy segment of the cluster benchmark: customers of the run date's snapshot who
-- spent at least `min_spend` over the 30 days up to it, or are gold or platinum members.
-- Amounts are summed as decimals: a sum of doubles depends on the order of its terms, which a
-- cluster's partial aggregates vary (13.98 + 78.39 + 107.63 is 200 or 199.99999999999997).
WITH spend AS (
  SELECT customer_id, sum(CAST(amount AS DECIMAL(12, 2))) AS spend, count(*) AS orders
  FROM orders
  WHERE dt BETWEEN '{{ run_date | add_days(-29) }}' AND '{{ run_date }}'
  GROUP BY customer_id
)
SELECT c.customer_id, c.email, c.phone, c.first_name, c.last_name, c.zip, c.country
FROM customers c
LEFT JOIN spend s ON s.customer_id = c.customer_id
WHERE c.dt = '{{ run_date }}'
  AND c.marketing_consent
  AND (coalesce(s.spend, 0) >= {{ vars.min_spend }} OR c.loyalty_tier IN ('gold', 'platinum'))
