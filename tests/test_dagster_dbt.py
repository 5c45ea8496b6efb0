"""Syncs declared in dbt `meta.cdp`: parsed from the manifest, downstream of their models, errors naming the model."""

from __future__ import annotations

import dagster as dg
import pytest

from dagster_cdp import build_customerio_dbt_sync_assets
from dagster_cdp.dagster.dbt import dbt_declared_syncs
from dagster_cdp.dagster.declared_syncs import InvalidSyncError, SyncModel
from dagster_cdp import Objects, People, Relationships


def _node(name: str, meta: dict, resource_type: str = "model") -> dict:
    return {
        "unique_id": f"{resource_type}.shop.{name}", "name": name, "resource_type": resource_type,
        "schema": "analytics", "alias": f"{name}_v2", "original_file_path": f"models/{name}.sql",
        "config": {"meta": meta}, "meta": meta,
    }


def test_meta_cdp_becomes_syncs_named_after_the_model_reading_its_relation() -> None:
    manifest = {"nodes": {
        "a": _node("customers", {"cdp": {"kind": "people", "id": "customer_id",
                                         "on_schema_change": "append_new_columns", "lock_timeout": 30}}),
        "b": _node("companies", {"cdp": [
            {"kind": "objects", "id": "company_id", "object_type": 3},
            {"kind": "relationships", "name": "company_members", "query": "select * from members",
             "user_id": "customer_id", "object_id": "company_id", "mode": "upsert"},
        ]}),
        "c": _node("orders", {"owner": "finance"}),
        "d": _node("not_null_customers_id", {"cdp": {"kind": "people", "id": "x"}}, resource_type="test"),
    }}
    syncs = {model + "/" + sync.name: sync.to_definition() for model, sync in dbt_declared_syncs(manifest)}
    assert set(syncs) == {"customers/customers", "companies/companies", "companies/company_members"}
    assert syncs["customers/customers"].table == "analytics.customers_v2"
    assert syncs["customers/customers"].mapping == People(id_column="customer_id")
    assert (syncs["customers/customers"].on_schema_change, syncs["customers/customers"].lock_timeout) == (
        "append_new_columns", 30)
    assert syncs["companies/companies"].on_schema_change == "fail"  # the default
    assert syncs["companies/companies"].mapping == Objects(id_column="company_id", object_type="3")
    members = syncs["companies/company_members"]
    assert members.table is None and members.query == "select * from members" and members.mode == "upsert"
    assert members.mapping == Relationships(user_id_column="customer_id", object_id_column="company_id")


def test_a_bad_meta_cdp_names_the_model_and_the_field() -> None:
    manifest = {"nodes": {"a": _node("customers", {"cdp": {"kind": "people", "user": "customer_id"}})}}
    with pytest.raises(InvalidSyncError) as raised:
        dbt_declared_syncs(manifest)
    message = str(raised.value)
    assert "dbt model customers (models/customers.sql).meta.cdp.user" in message
    assert "'user' is not a field of people syncs" in message


def test_meta_cdp_takes_the_declared_names_not_the_python_ones() -> None:
    manifest = {"nodes": {"a": _node("customers", {"cdp": {"kind": "people", "id_column": "customer_id"}})}}
    with pytest.raises(InvalidSyncError, match="'id_column' is not a field of people syncs; their fields are .*, id, "):
        dbt_declared_syncs(manifest)


def test_meta_cdp_names_differing_only_in_case_are_refused_naming_both_models() -> None:
    manifest = {"nodes": {"a": _node("customers", {"cdp": {"kind": "people", "id": "id", "name": "People"}}),
                          "b": _node("leads", {"cdp": {"kind": "people", "id": "id", "name": "people"}})}}
    with pytest.raises(InvalidSyncError, match=r"dbt models customers, leads\.meta\.cdp\.name: sync names 'People' "
                                               r"and 'people' differ only in case"):
        dbt_declared_syncs(manifest)


def test_translation_changes_every_sync_asset_spec_of_the_dbt_project() -> None:
    """`build_customerio_dbt_sync_assets(translation=...)`: asset attributes per declared sync, without subclassing."""
    from example_repo.definitions import example_dbt_models

    def translation(spec: dg.AssetSpec, sync: SyncModel) -> dg.AssetSpec:
        return spec.replace_attributes(key=["crm", sync.name], owners=["team:crm"], tags={"cdp_kind": sync.kind})

    assets = build_customerio_dbt_sync_assets(example_dbt_models, translation=translation)
    specs = {asset.key: asset.specs_by_key[asset.key] for asset in assets}
    assert set(specs) == {dg.AssetKey(["crm", name]) for name in
                          ("people", "accounts", "memberships", "devices", "suppressions", "events", "aliases")}
    assert all(spec.owners == ["team:crm"] for spec in specs.values())
    assert specs[dg.AssetKey(["crm", "memberships"])].tags["cdp_kind"] == "relationships"
    assert specs[dg.AssetKey(["crm", "people"])].deps  # still downstream of its dbt model


def test_a_translation_in_meta_cdp_sets_that_sync_asset_spec_after_the_python_one() -> None:
    """`meta: {cdp: {..., translation: {...}}}`: one sync's asset attributes, templated with the sync, applied after
    `build_customerio_dbt_sync_assets(translation=...)` (as in defs.yaml)."""
    import copy

    from dagster_dbt import dbt_assets
    from dagster_dbt.asset_utils import get_manifest_and_translator_from_dbt_assets

    from example_repo.definitions import example_dbt_models

    manifest = copy.deepcopy(dict(get_manifest_and_translator_from_dbt_assets([example_dbt_models])[0]))
    [people] = [n for n in manifest["nodes"].values() if n["resource_type"] == "model" and n["name"] == "people"]
    people["config"]["meta"]["cdp"]["translation"] = {
        "group_name": "crm_{{ sync.kind }}", "owners": ["team:lifecycle"], "tags": {"tier": "gold"},
        "automation_condition": "{{ automation_condition.on_cron('0 6 * * *') }}",
    }
    people["meta"] = people["config"]["meta"]

    @dbt_assets(manifest=manifest)
    def models(): ...

    assets = build_customerio_dbt_sync_assets(models, translation=lambda spec, sync: spec.replace_attributes(owners=["team:crm"]))
    specs = {asset.key: asset.specs_by_key[asset.key] for asset in assets}
    people_spec, accounts_spec = specs[dg.AssetKey("cdp_people")], specs[dg.AssetKey("cdp_accounts")]
    assert (people_spec.group_name, people_spec.owners, people_spec.tags["tier"]) == (
        "crm_people", ["team:lifecycle"], "gold")
    assert people_spec.automation_condition == dg.AutomationCondition.on_cron("0 6 * * *")
    assert (accounts_spec.group_name, accounts_spec.owners) == ("customerio", ["team:crm"])
    assert accounts_spec.automation_condition != people_spec.automation_condition
