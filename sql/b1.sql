-- Benchmark B1: consenting customers worth at least `min_value`, from the run date's snapshot.
-- The same segment as shared/bench/peers/duckdb_meta.py.
SELECT customer_id, email, phone, first_name, last_name, zip, country
FROM customers
WHERE dt = '{{ run_date }}'
  AND marketing_consent
  AND lifetime_value >= {{ vars.min_value }}
