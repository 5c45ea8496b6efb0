"""A kind is declared once: the same class takes Python's field names and YAML's, and refuses bad values."""

import pickle

import pytest

from dagster_cdp import Events, Objects, People, SourceError


def test_a_mapping_takes_its_python_names_or_its_declared_ones() -> None:
    python = People(id_column="user_id", traits=["plan"])
    declared = People.model_validate({"id": "user_id", "traits": ["plan"]})
    assert python == declared and hash(python) == hash(declared)
    assert Objects.model_validate({"id": "account_id", "object_type": 2}).object_type == "2"


def test_bad_values_in_python_raise_source_error() -> None:
    with pytest.raises(SourceError, match=r"^object_type must be an integer object type id such as 1, got 'two'\.$"):
        Objects(id_column="account_id", object_type="two")
    with pytest.raises(SourceError, match="^People needs id_column"):
        People(traits=["plan"])
    with pytest.raises(SourceError, match="event_column"):
        Events(id_column="id", user_id_column="user_id")


def test_declared_syncs_and_mappings_pickle() -> None:
    from dagster_cdp.dagster.declared_syncs import parse_sync

    declared = parse_sync({"kind": "objects", "name": "accounts", "table": "accounts", "id": "id", "object_type": 2})
    assert pickle.loads(pickle.dumps(declared)) == declared
    assert pickle.loads(pickle.dumps(declared.to_definition())) == declared.to_definition()
