"""The Dagster layer of dagster-cdp: resources, sync assets, the component, ops, dbt, schedules."""
