-- B1 with a DISTINCT and an ORDER BY over the whole segment: the query holds every member at
-- once, so within a memory budget both must spill to TMPDIR (benches/memory_budget.sh).
SELECT DISTINCT customer_id, email, phone, first_name, last_name, zip, country
FROM customers
WHERE dt = '{{ run_date }}'
  AND marketing_consent
  AND lifetime_value >= {{ vars.min_value }}
ORDER BY email, customer_id
