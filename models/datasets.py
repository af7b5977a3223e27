"""Training data: CoRE MOF 2019 structures (package ``core-mof``) and label tables.

The ``core-mof`` package ships its CIFs as one ``.tar.xz`` per dataset; reading
one entry scans the whole archive, so :func:`coremof_cif_dir` extracts a
dataset once into a cache folder and later calls reuse it.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

#: CoRE MOF 2019, all-solvent-removed subset (the labels' source).
DEFAULT_DATASET = "2019-ASR"
#: CH4 uptake labels (RASPA2 GCMC, DESIGN.md §6): the reference table, and the rows this project simulates
#: with ``retnet simulate`` under the same protocol (bench/extend_labels.sh; append-only).
CH4_LABELS = Path(__file__).resolve().parent / "data" / "ch4_coremof2019_raspa2.csv"
CH4_EXTRA_LABELS = CH4_LABELS.with_name("ch4_coremof2019_raspa2_extra.csv")
#: Geometric descriptors of the core-mof CSV (Zeo++): Å, Å, Å, g/cm³, m²/cm³, m²/g, -, cm³/g.
GEOMETRIC_DESCRIPTORS = ["LCD", "PLD", "LFPD", "cm3_g", "ASA_m2_cm3", "ASA_m2_g", "AV_VF", "AV_cm3_g"]


def default_cache_dir() -> Path:
    """Folder for extracted datasets: ``$RETNET_CACHE_DIR`` or ``~/.cache/retnet``."""
    return Path(os.environ.get("RETNET_CACHE_DIR", Path.home() / ".cache" / "retnet"))


def _archive(dataset: str) -> Path:
    import CoRE_MOF.data  # type: ignore[import-untyped]

    path = Path(str(resources.files(CoRE_MOF.data) / f"{dataset}.tar.xz"))
    if not path.exists():
        raise KeyError(f"unknown CoRE MOF dataset {dataset!r}")
    return path


def coremof_cif_dir(dataset: str = DEFAULT_DATASET, cache_dir: Path | None = None) -> Path:
    """Return a folder holding every CIF of a CoRE MOF dataset, extracting the archive on first use.

    Extraction is atomic (temporary folder, then rename), so concurrent callers
    and interrupted runs never see a partial folder.
    """
    target = (cache_dir or default_cache_dir()) / f"coremof-{dataset}"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
    staging.mkdir(parents=True, exist_ok=True)
    with tarfile.open(_archive(dataset), "r:xz") as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if not (member.isfile() and member.size > 0 and name.endswith(".cif")) or name.startswith("."):
                continue
            source = tar.extractfile(member)
            if source is not None:
                (staging / name).write_bytes(source.read())
    (staging / ".complete").touch()
    try:
        staging.rename(target)
    except OSError:  # another process won the race
        if not (target / ".complete").exists():
            raise
    return target


def coremof_cif(name: str, dataset: str = DEFAULT_DATASET, cache_dir: Path | None = None) -> Path:
    """Path of one CoRE MOF CIF by entry name (``ABAVIJ_clean``)."""
    path = coremof_cif_dir(dataset, cache_dir) / f"{name}.cif"
    if not path.exists():
        raise KeyError(f"{name!r} is not in CoRE MOF {dataset}")
    return path


def coremof_properties(dataset: str = DEFAULT_DATASET) -> pd.DataFrame:
    """The core-mof property table (geometric descriptors), indexed by structure name."""
    import CoRE_MOF  # type: ignore[import-untyped]

    table = CoRE_MOF.get_properties(dataset)
    table = table.loc[:, ~table.columns.str.startswith("Unnamed")]
    return table.set_index("filename")


def read_labels(csv: Path | str, target: str | list[str], rows: int | None = None) -> pd.DataFrame:
    """Read a labels CSV (``name,<target>...``) keeping rows with finite targets.

    A ``status`` column, when present (the reference GCMC table), keeps only ``ok`` rows.
    ``rows`` reads only the file's first data rows (before that filtering); None reads all.

    Raises
    ------
    KeyError
        A requested target column (or the ``name`` column) is missing.
    """
    table = pd.read_csv(csv, nrows=rows)
    targets = [target] if isinstance(target, str) else list(target)
    missing = [c for c in ["name", *targets] if c not in table.columns]
    if missing:
        raise KeyError(f"labels CSV {csv} lacks column(s) {', '.join(missing)}; it has {', '.join(table.columns)}")
    if "status" in table.columns:
        table = table[table["status"] == "ok"]
    table = table.dropna(subset=targets)
    return table.reset_index(drop=True)


def labels_sha256(table: pd.DataFrame, columns: list[str]) -> str:
    """sha256 of the (name, targets) rows, recorded in model cards to identify training labels."""
    payload = table[["name", *columns]].sort_values("name").to_csv(index=False, float_format="%.8g")
    return hashlib.sha256(payload.encode()).hexdigest()


def hash_split(names: list[str], test_fraction: float, val_fraction: float,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split structures into test / validation / training by a seeded hash of their names.

    The names are ordered by ``sha256(f"{seed}:{name}")``; the first ``ceil(test_fraction · n)``
    are the test set (rounded up, so it never falls below the fraction), the next
    ``round(val_fraction · rest)`` the validation set, the remainder training. Because a
    structure's place in that order does not depend on the other names, a label table that
    grows moves few structures across the split.

    Returns
    -------
    test, val, train : np.ndarray of int
        Indices into ``names``.
    """
    keys = [hashlib.sha256(f"{seed}:{name}".encode()).hexdigest() for name in names]
    order = np.argsort(keys, kind="stable").astype(np.int64)
    n_test = int(np.ceil(test_fraction * len(order)))
    n_val = int(round(val_fraction * (len(order) - n_test)))
    return order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
