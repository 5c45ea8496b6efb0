"""The runnable example of dagster-cdp: dbt models in an embedded DuckDB, synced to Customer.io."""
