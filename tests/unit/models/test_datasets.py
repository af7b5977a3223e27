"""Label tables: status filtering, partial reads of growing files, and the label fingerprint of model cards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.datasets import CH4_EXTRA_LABELS, CH4_LABELS, hash_split, labels_sha256, read_labels

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
    reference = set(read_labels(CH4_LABELS, "ch4_uptake_mol_kg")["name"])
    extra = read_labels(CH4_EXTRA_LABELS, "ch4_uptake_mol_kg")["name"]
    assert extra.is_unique
    assert not reference & set(extra)


def test_hash_split_covers_every_name_once_with_at_least_the_test_fraction() -> None:
    names = [f"MOF{i:04d}_clean" for i in range(137)]
    test, val, train = hash_split(names, 0.2, 0.1, seed=0)
    assert sorted(np.concatenate([test, val, train]).tolist()) == list(range(len(names)))
    assert len(test) == 28 and len(test) >= 0.2 * len(names)  # ceil(27.4)
    assert len(val) == 11  # round(0.1 × 109)
    again = hash_split(list(reversed(names)), 0.2, 0.1, seed=0)
    assert {names[i] for i in test} == {names[::-1][i] for i in again[0]}  # depends on names, not their order
    other_seed = hash_split(names, 0.2, 0.1, seed=1)[0]
    assert set(other_seed.tolist()) != set(test.tolist())


def test_hash_split_moves_few_structures_when_labels_grow() -> None:
    names = [f"MOF{i:04d}_clean" for i in range(400)]
    before = hash_split(names[:300], 0.2, 0.1)
    after = hash_split(names, 0.2, 0.1)
    side_before = {names[i]: k for k, part in enumerate(before) for i in part}
    side_after = {names[i]: k for k, part in enumerate(after) for i in part}
    moved = sum(side_before[n] != side_after[n] for n in names[:300])
    assert moved < 0.1 * 300


def test_hash_split_of_nothing_is_empty() -> None:
    assert all(len(part) == 0 for part in hash_split([], 0.2, 0.1))
