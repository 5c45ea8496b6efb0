"""A local emulator of Customer.io's Pipelines API, for tests and for trying dagster-cdp without an account.

Imports nothing from Dagster, so `dagster-cdp emulator` starts fast and anywhere.
"""
