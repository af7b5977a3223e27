"""Label tables: status filtering, partial reads of growing files, and the label fingerprint of model cards."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.datasets import labels_sha256, read_labels

DATA = Path(__file__).resolve().parents[3] / "models" / "data"

CSV = """name,ch4_uptake_mol_kg,status
A_clean,1.5,ok
B_clean,,skipped_large
C_clean,2.25,ok
D_clean,3.0,failed
E_clean,0.75,ok
"""


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(CSV)
    return path


def test_only_ok_rows_with_a_value_are_kept(labels: Path) -> None:
    table = read_labels(labels, "ch4_uptake_mol_kg")
    assert table["name"].tolist() == ["A_clean", "C_clean", "E_clean"]
    assert table["ch4_uptake_mol_kg"].tolist() == [1.5, 2.25, 0.75]


def test_rows_reads_a_prefix_of_the_file_before_filtering(labels: Path) -> None:
    assert read_labels(labels, "ch4_uptake_mol_kg", rows=3)["name"].tolist() == ["A_clean", "C_clean"]
    assert read_labels(labels, "ch4_uptake_mol_kg", rows=1)["name"].tolist() == ["A_clean"]


def test_missing_target_column_is_named(labels: Path) -> None:
    with pytest.raises(KeyError, match="lacks column"):
        read_labels(labels, "co2_uptake")


def test_label_fingerprint_ignores_row_order_but_not_values(labels: Path) -> None:
    table = read_labels(labels, "ch4_uptake_mol_kg")
    reordered = table.iloc[::-1].reset_index(drop=True)
    assert labels_sha256(table, ["ch4_uptake_mol_kg"]) == labels_sha256(reordered, ["ch4_uptake_mol_kg"])
    changed = table.copy()
    changed.loc[0, "ch4_uptake_mol_kg"] = 1.6
    assert labels_sha256(changed, ["ch4_uptake_mol_kg"]) != labels_sha256(table, ["ch4_uptake_mol_kg"])


def test_shipped_label_files_do_not_overlap() -> None:
    """Extra GCMC labels extend the reference set; a structure labelled twice would leak across the split."""
    reference = set(read_labels(DATA / "ch4_coremof2019_raspa2.csv", "ch4_uptake_mol_kg")["name"])
    extra = read_labels(DATA / "ch4_coremof2019_raspa2_extra.csv", "ch4_uptake_mol_kg")["name"]
    assert extra.is_unique
    assert not reference & set(extra)
