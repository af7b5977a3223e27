"""The broken-CIF corpus (``tests/data/bad/``): every file is refused with a typed, human message.

Parsing and voxelizing each file must raise a :class:`models.errors.StructureError` subclass whose message is
not empty: never another exception type (a bare ``ValueError`` from numpy, a ``KeyError`` from pymatgen), never
a silently different crystal, never a hang.
"""

from __future__ import annotations

from pathlib import Path

import pytest

BAD = Path(__file__).resolve().parents[2] / "data" / "bad"
CORPUS = sorted(p for p in BAD.iterdir() if p.is_file() and p.suffix != ".py")


def _refuse(path: Path) -> BaseException:
    """Parse and voxelize ``path`` as the service does; the exception raised (fails when none is)."""
    from models.params import VoxelParams
    from models.structure import parse_cif
    from models.voxels import compute_voxels

    try:
        crystal = parse_cif(path.read_bytes(), name=path.stem)
        compute_voxels(crystal, VoxelParams(), device="cpu", threads=1)
    except BaseException as exc:  # noqa: BLE001  (the type is what the test checks)
        return exc
    pytest.fail(f"{path.name} was accepted: parse_cif and compute_voxels raised nothing")


def test_corpus_is_large_and_small_files() -> None:
    assert len(CORPUS) >= 50
    assert all(p.stat().st_size <= 40_000 for p in CORPUS), "each corpus file stays small"


def test_corpus_is_what_make_corpus_writes() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_corpus", BAD / "make_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run python tests/data/bad/make_corpus.py and commit the files"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_bad_file_raises_a_structure_error(path: Path) -> None:
    from models.errors import StructureError

    error = _refuse(path)
    assert isinstance(error, StructureError), f"{type(error).__name__}: {error}"
    assert str(error).strip(), "the message is not empty"
    assert str(error).startswith(path.stem), "the message names the structure"
