"""The sync engine: warehouse table or query in, only the changes out to Customer.io. Works without Dagster.

Its public names are imported from `dagster_cdp`, for example:

    from dagster_cdp import People, PipelinesClient, SyncDefinition, run_sync

    definition = SyncDefinition(name="people", table="analytics.customers", mapping=People(id_column="id"))
    with PipelinesClient(api_key) as client:
        report = run_sync(definition, warehouse="postgresql+psycopg://...", client=client)
"""
