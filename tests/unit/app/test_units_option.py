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
