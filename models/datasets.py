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


def _parsed_facts(path: str) -> tuple[str, str, float]:
    """(name, sha256, density g/cm³) of one CIF, parsed as the service parses uploads ('' / nan on failure)."""
    from models.structure import parse_cif
    from models.units import crystal_density_g_cm3

    name = Path(path).stem
    try:
        crystal = parse_cif(Path(path).read_text(errors="replace"), name)
        return name, crystal.sha256, float(crystal_density_g_cm3(crystal))
    except Exception:  # noqa: BLE001  (a CIF the service would refuse: no hash, no density)
        return name, "", float("nan")


def coremof_structures(names: list[str], jobs: int = 1, dataset: str = DEFAULT_DATASET,
                       cache_dir: Path | None = None) -> pd.DataFrame:
    """``sha256`` and ``density_g_cm3`` (g/cm³) of CoRE MOF entries, indexed by name, as the service computes them.

    The CIFs are parsed once (``jobs`` processes) and the facts cached in ``coremof-<dataset>-structures.csv``
    of the cache folder; a CIF the service would refuse gets ``''`` and NaN.
    """
    cache = (cache_dir or default_cache_dir()) / f"coremof-{dataset}-structures.csv"
    known: dict[str, tuple[str, float]] = {}
    if cache.exists():
        table = pd.read_csv(cache, keep_default_na=False, dtype={"sha256": str})
        known = {r.name: (r.sha256, float(r.density_g_cm3) if r.density_g_cm3 != "" else float("nan"))
                 for r in table.itertuples()}
    todo = [str(coremof_cif(n, dataset, cache_dir)) for n in dict.fromkeys(names) if n not in known]
    if todo:
        if jobs > 1:
            from multiprocessing import get_context

            with get_context("spawn").Pool(jobs) as pool:
                parsed = list(pool.imap(_parsed_facts, todo, chunksize=16))
        else:
            parsed = [_parsed_facts(p) for p in todo]
        known.update({n: (sha, rho) for n, sha, rho in parsed})
        staging = cache.with_name(f"{cache.name}.partial-{os.getpid()}")
        pd.DataFrame([{"name": n, "sha256": v[0], "density_g_cm3": v[1]} for n, v in known.items()]).to_csv(
            staging, index=False)
        staging.replace(cache)
    return pd.DataFrame([{"name": n, "sha256": known[n][0], "density_g_cm3": known[n][1]} for n in names]
                        ).set_index("name")


#: Columns of the Widom tables (:func:`widom_table_path`): log10 K_H (mol/(kg·bar)) and Q_st⁰ (kJ/mol).
WIDOM_COLUMNS = ("log10_henry_mol_kg_bar", "qst_kj_mol")


def widom_table_path(block: bool = False) -> Path:
    """The resumable table of CH4 Widom values of CoRE MOFs (``scripts/widom_targets.py``; generated data in the
    cache folder, not committed): ``name,log10_henry_mol_kg_bar,qst_kj_mol,seconds,status``. The pre-training
    targets (:data:`models.widom.CH4_PROBE`, 32³), or with ``block`` the ``ch4_widom`` descriptors'
    (:data:`models.widom.CH4_BLOCK_PROBE`, 25³)."""
    return default_cache_dir() / ("ch4_widom_block_298K.csv" if block else "widom_ch4_298K.csv")


def read_widom_table(block: bool = False) -> pd.DataFrame:
    """The ``ok`` rows of :func:`widom_table_path` (the last row of a structure counts), its
    :data:`WIDOM_COLUMNS` as numbers, indexed by name; a closed framework keeps its −inf / NaN. Empty when the
    table does not exist yet."""
    path = widom_table_path(block)
    table = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["name", *WIDOM_COLUMNS, "status"])
    table = table[table["status"] == "ok"].drop_duplicates("name", keep="last").set_index("name")
    return table[list(WIDOM_COLUMNS)].apply(pd.to_numeric, errors="coerce")


def coremof_crystal_blocks(names: list[str], blocks: tuple[str, ...] | list[str]) -> dict[str, np.ndarray]:
    """The crystal blocks ``blocks`` (:data:`models.descriptors.CRYSTAL_BLOCKS`) of CoRE MOF structures, in the
    order of ``names``: ``ch4_widom`` from :func:`read_widom_table` (``block=True``: computed as serving computes
    it), the structures it lacks computed here from their CIFs."""
    from models.descriptors import crystal_blocks_of, stack_crystal_blocks
    from models.structure import load_crystal
    from models.widom import CH4_BLOCK_PROBE, crystal_widom_targets, descriptor_row

    if not crystal_blocks_of(blocks):
        return {}
    unknown = sorted(set(crystal_blocks_of(blocks)) - {"ch4_widom"})
    if unknown:
        raise ValueError(f"no CoRE MOF table for the crystal blocks {unknown}")
    known = read_widom_table(block=True)
    rows = [{"ch4_widom": descriptor_row(dict(known.loc[n]) if n in known.index else
                                         crystal_widom_targets(load_crystal(coremof_cif(n)), CH4_BLOCK_PROBE))}
            for n in names]
    return stack_crystal_blocks(("ch4_widom",), rows)


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
