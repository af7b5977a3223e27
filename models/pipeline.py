"""CIF files → energy-voxel grids, with an on-disk cache; labelled training sets.

Pure library code (no prints, no env reads): the CLI, the training worker and
the benchmarks call these. Inputs are CIF paths, a folder of CIFs, or a ``.zip``
of CIFs; a structure's name is its file stem.

Cache layout: the one voxel-cache scheme of :mod:`models.voxel_cache`, shared
with the service's object store: ``<cache_dir>/`` + ``voxel_key(crystal.sha256,
params.params_hash())``, i.e. ``<cache_dir>/voxels/<params_hash>/<sha[:2]>/
<sha>_<params_hash>.npy.gz`` (gzip-compressed float32 ``.npy``). The structure
hash is canonical (the same crystal under another name or formatting is a hit);
a hit costs one parse (milliseconds on the fast P1 path), no grid computation.
A cache folder can be the service's local store root (``<data_dir>/store``).
"""

from __future__ import annotations

import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from models.params import VoxelParams
from models.voxel_cache import decode_grid, encode_grid, voxel_key

if TYPE_CHECKING:
    from models.structure import Crystal

#: Called once per structure after it is done: (name, error message or None).
ProgressCallback = Callable[[str, "str | None"], None]
#: Called for each failure: (name, exception). Without one, the first failure is raised.
ErrorCallback = Callable[[str, Exception], None]


@dataclass(frozen=True)
class CifSource:
    """One CIF to voxelize: a name and a way to read its bytes."""

    name: str
    path: Path | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        """The CIF bytes."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()


def _is_cif_name(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return (name.lower().endswith(".cif") and not any(p.startswith(".") for p in parts)
            and "__MACOSX" not in parts)


def cif_sources(location: str | Path | Iterable[str | Path]) -> list[CifSource]:
    """List the CIFs of a folder, a ``.zip`` archive, a single file, or a list of paths.

    Folders are searched recursively for ``*.cif`` (case-insensitive), hidden files
    skipped; a list of paths is taken as given (any suffix), in order.

    Raises
    ------
    FileNotFoundError
        The folder or archive does not exist.
    ValueError
        Two CIFs share a name (file stem), or the archive is not a zip file.
    """
    if isinstance(location, str | Path):
        root = Path(location)
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or folder")
        if root.is_dir():
            paths = sorted(p for p in root.rglob("*") if p.is_file() and _is_cif_name(p.relative_to(root).as_posix()))
            sources = [CifSource(p.stem, path=p) for p in paths]
        elif root.suffix.lower() == ".zip":
            if not zipfile.is_zipfile(root):
                raise ValueError(f"{root}: not a zip archive")
            with zipfile.ZipFile(root) as archive:
                members = sorted(m for m in archive.namelist() if _is_cif_name(m) and not m.endswith("/"))
                sources = [CifSource(PurePosixPath(m).stem, data=archive.read(m)) for m in members]
        else:
            sources = [CifSource(root.stem, path=root)]
    else:
        sources = [CifSource(Path(p).stem, path=Path(p)) for p in location]
    seen: dict[str, int] = {}
    for s in sources:
        seen[s.name] = seen.get(s.name, 0) + 1
    duplicated = sorted(n for n, k in seen.items() if k > 1)
    if duplicated:
        raise ValueError(f"several CIFs share the name(s) {', '.join(duplicated[:5])}: names are file stems and "
                         "must be unique")
    return sources


def cache_path(cache_dir: str | Path, structure_sha256: str, params: VoxelParams) -> Path:
    """Where the grid of a structure (:attr:`~models.structure.Crystal.sha256`) under these parameters is cached.

    ``cache_dir / voxel_key(structure_sha256, params.params_hash())``: the service's storage key.
    """
    return Path(cache_dir) / voxel_key(structure_sha256, params.params_hash())


def _save_atomic(path: Path, grid: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # ".tmp-": skipped by the local store's listing
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(encode_grid(grid))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_cached(path: Path, params: VoxelParams) -> np.ndarray | None:
    try:
        grid = decode_grid(path.read_bytes())
    except (OSError, ValueError, EOFError, zlib.error):  # missing, truncated or not a gzip'd .npy: recompute
        return None
    n = params.grid_size
    if grid.shape != (n, n, n) or grid.dtype != np.float32:
        return None
    return grid


def voxelize_one(source: CifSource, params: VoxelParams, cache_dir: str | Path | None = None, *,
                 threads: int | None = None) -> np.ndarray:
    """Grid of one CIF (float32, (n, n, n)), through the cache when one is given.

    Raises as :func:`voxelize_crystal`.
    """
    return voxelize_crystal(source, params, cache_dir, threads=threads)[0]


def voxelize_crystal(source: CifSource, params: VoxelParams, cache_dir: str | Path | None = None, *,
                     threads: int | None = None) -> tuple[np.ndarray, Any]:
    """(grid, parsed :class:`models.structure.Crystal`) of one CIF, the grid through the cache when one is given.

    Raises
    ------
    StructureError
        The CIF cannot be gridded (the message names the problem).
    OSError
        The file cannot be read.
    """
    from models.errors import InvalidCIFError
    from models.structure import parse_cif
    from models.voxels import compute_voxels

    try:
        data = source.read()
    except OSError as exc:
        raise InvalidCIFError(f"{source.name}: cannot read file ({exc.strerror or exc})") from exc
    crystal = parse_cif(data, source.name)
    cached = cache_path(cache_dir, crystal.sha256, params) if cache_dir is not None else None
    if cached is not None and cached.exists():
        grid = _load_cached(cached, params)
        if grid is not None:
            return grid, crystal
    grid = compute_voxels(crystal, params, device="cpu", threads=threads)
    if cached is not None:
        _save_atomic(cached, grid)
    return grid, crystal


def voxelize_paths(
    paths: str | Path | Iterable[str | Path] | Sequence[CifSource],
    params: VoxelParams | None = None,
    cache_dir: str | Path | None = None,
    *,
    on_error: ErrorCallback | None = None,
    progress: ProgressCallback | None = None,
    threads: int | None = None,
    crystals: dict[str, Crystal] | None = None,
) -> dict[str, np.ndarray]:
    """Voxelize many CIFs: ``{name: float32 grid (n, n, n)}`` in input order, failures left out.

    Parameters
    ----------
    paths : folder, ``.zip``, path, iterable of paths, or list of :class:`CifSource`
        The CIFs; names are file stems.
    params : VoxelParams, optional
        Default: the thesis parameters.
    cache_dir : path, optional
        Grid cache folder (see the module docstring); None: no cache.
    on_error : callable(name, exception), optional
        Receives each failure (every :class:`~models.errors.StructureError` and any
        other exception of one structure); the run goes on. Without it, the first
        failure is raised.
    progress : callable(name, error message or None), optional
        Called after each structure.
    threads : int, optional
        CPU threads of the grid kernel (default: all cores).
    crystals : dict, optional
        Filled with ``{name: parsed crystal}`` of each structure gridded (its density, its crystal blocks).
    """
    params = params or VoxelParams()
    if isinstance(paths, Sequence) and paths and all(isinstance(p, CifSource) for p in paths):
        sources = list(paths)  # type: ignore[arg-type]
    else:
        sources = cif_sources(paths)  # type: ignore[arg-type]
    grids: dict[str, np.ndarray] = {}
    for source in sources:
        try:
            grid, crystal = voxelize_crystal(source, params, cache_dir, threads=threads)
            if crystals is not None:
                crystals[source.name] = crystal
            grids[source.name] = grid
        except Exception as exc:
            if on_error is None:
                raise
            on_error(source.name, exc)
            if progress is not None:
                progress(source.name, describe_error(exc))
            continue
        if progress is not None:
            progress(source.name, None)
    return grids


def describe_error(exc: BaseException) -> str:
    """The message shown for a failed structure: the text of a StructureError, else type + text."""
    from models.errors import StructureError

    if isinstance(exc, StructureError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass
class TrainingSet:
    """Labelled grids ready for :func:`models.training.train_retnet`.

    Attributes
    ----------
    names : list of str
        Structure names, in the order of ``grids`` and ``targets``.
    grids : ndarray, float32, shape (N, n, n, n)
    targets : ndarray, float64, shape (N, k)
        Label columns in the order of ``target_names``.
    target_names : list of str
    failures : dict
        ``{name: message}`` for labelled structures that could not be used (no CIF, bad CIF).
    labels_sha256 : str
        Hash of the used (name, targets) rows (see :func:`models.datasets.labels_sha256`).
    unlabelled : int
        CIFs present without a label row (ignored).
    densities : ndarray, float64, shape (N,) or None
        Crystal densities, g/cm³, in the order of ``grids`` (for descriptor models).
    crystal_blocks : dict of str to ndarray (N, width)
        The crystal blocks asked for (:func:`models.descriptors.compute_crystal_blocks`), in the order of ``grids``.
    """

    names: list[str]
    grids: np.ndarray
    targets: np.ndarray
    target_names: list[str]
    failures: dict[str, str] = field(default_factory=dict)
    labels_sha256: str = ""
    unlabelled: int = 0
    densities: np.ndarray | None = None
    crystal_blocks: dict[str, np.ndarray] = field(default_factory=dict)


def load_training_set(
    data_dir_or_zip: str | Path,
    labels_csv: str | Path,
    targets: str | Sequence[str],
    params: VoxelParams | None = None,
    cache_dir: str | Path | None = None,
    *,
    progress: ProgressCallback | None = None,
    threads: int | None = None,
    crystal_blocks: Sequence[str] = (),
) -> TrainingSet:
    """Voxelize the labelled CIFs of a folder or zip and pair them with their labels.

    The labels CSV has a ``name`` column (CIF file stem) and the target columns;
    rows with a ``status`` column other than ``ok`` or a missing target are dropped
    (see :func:`models.datasets.read_labels`). Structures that fail are reported in
    ``failures``, never silently dropped. ``crystal_blocks`` names the crystal blocks to compute too (the
    ``ch4_widom`` numbers that hybrid trees may read).

    Raises
    ------
    KeyError
        A target column is missing from the CSV.
    ValueError
        No labelled structure could be voxelized.
    """
    from models.datasets import labels_sha256, read_labels
    from models.descriptors import compute_crystal_blocks, stack_crystal_blocks
    from models.units import crystal_density_g_cm3

    target_names = [targets] if isinstance(targets, str) else list(targets)
    params = params or VoxelParams()
    table = read_labels(labels_csv, target_names)
    table = table.drop_duplicates(subset="name", keep="first")
    sources = {s.name: s for s in cif_sources(data_dir_or_zip)}
    labelled = [n for n in table["name"].astype(str) if n in sources]
    failures: dict[str, str] = {n: "no CIF with this name in the data" for n in table["name"].astype(str)
                                if n not in sources}

    def record(name: str, exc: Exception) -> None:
        failures[name] = describe_error(exc)

    crystals: dict[str, Crystal] = {}
    grids = voxelize_paths([sources[n] for n in labelled], params, cache_dir, on_error=record, progress=progress,
                           threads=threads, crystals=crystals)
    blocks: dict[str, dict[str, np.ndarray]] = {}
    for name in [n for n in labelled if n in grids]:
        try:
            blocks[name] = compute_crystal_blocks(crystal_blocks, [crystals[name]], threads=threads)
        except Exception as exc:  # noqa: BLE001  (recorded like any failure of one structure)
            record(name, exc)
    names = [n for n in labelled if n in grids and n in blocks]
    if not names:
        raise ValueError(f"no labelled structure could be voxelized ({len(failures)} failure(s), e.g. "
                         f"{next(iter(failures.items()), ('-', '-'))})")
    used = table.set_index(table["name"].astype(str)).loc[names]
    n = params.grid_size
    stacked = np.stack([grids[k] for k in names]) if names else np.zeros((0, n, n, n), np.float32)
    values = used[target_names].to_numpy(dtype=np.float64)
    return TrainingSet(
        names=names,
        grids=stacked,
        targets=values,
        target_names=target_names,
        failures=failures,
        labels_sha256=labels_sha256(used.reset_index(drop=True), target_names),
        unlabelled=len(set(sources) - set(table["name"].astype(str))),
        densities=np.array([crystal_density_g_cm3(crystals[k]) for k in names], dtype=np.float64),
        crystal_blocks=stack_crystal_blocks(crystal_blocks, [blocks[k] for k in names]),
    )
