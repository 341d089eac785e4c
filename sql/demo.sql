-- Demo segment: consenting customers who spent at least {{ vars.min_spend }} in the 7 days up to
-- the run date, or who are gold or platinum members, as of the run date's snapshot. Amounts are
-- summed as decimals, so the sum does not depend on the order of its terms (see README, Segments).
WITH recent_spend AS (
  SELECT customer_id, sum(CAST(amount AS DECIMAL(12, 2))) AS spend
  FROM orders
  WHERE dt BETWEEN '{{ run_date | add_days(-6) }}' AND '{{ run_date }}'
  GROUP BY customer_id
)
SELECT c.customer_id, c.email, c.phone, c.first_name, c.last_name, c.city, c.state, c.zip,
       c.country, c.date_of_birth, c.gender, c.mobile_ad_id
FROM customers c
LEFT JOIN recent_spend r ON r.customer_id = c.customer_id
WHERE c.dt = '{{ run_date }}'
  AND c.marketing_consent
  AND (coalesce(r.spend, 0) >= {{ vars.min_spend }} OR c.loyalty_tier IN ('gold', 'platinum'))
