"""The ``units`` option: volumetric units only for models that predict mol/kg."""

from __future__ import annotations

import pytest

from app.services.errors import UnprocessableError
from app.services.submit import check_units


def test_mol_per_kg_models_offer_both_units() -> None:
    card = {"targets": [{"name": "ch4", "unit": "mol/kg"}]}
    check_units(card, "mol/kg")
    check_units(card, "cm3(STP)/cm3")


def test_other_models_refuse_volumetric_units() -> None:
    with pytest.raises(UnprocessableError, match="predicts 'K'"):
        check_units({"targets": [{"name": "henry", "unit": "K"}]}, "cm3(STP)/cm3")
    with pytest.raises(UnprocessableError):
        check_units({"targets": [{"name": "ch4", "unit": "mol/kg"}]}, "g/g")


def test_a_reparsed_structure_gets_the_density_it_lacked(settings) -> None:  # type: ignore[no-untyped-def]
    """Structures stored before densities were kept get theirs the next time a worker parses them, once."""
    from sqlalchemy import select

    from app.db.session import session_scope
    from app.db.tables import Structure
    from app.services.submit import upsert_structures

    row = {"sha256": "a" * 64, "name": "x", "formula": "C", "n_atoms": 1, "raw_key": "raw/x"}
    with session_scope(settings.db_url) as session:
        upsert_structures(session, [row])
    with session_scope(settings.db_url) as session:
        upsert_structures(session, [{**row, "density_g_cm3": 0.8}])
    with session_scope(settings.db_url) as session:
        upsert_structures(session, [{**row, "density_g_cm3": 5.0}])  # an existing density is never overwritten
    with session_scope(settings.db_url) as session:
        assert session.scalar(select(Structure.density_g_cm3)) == 0.8
