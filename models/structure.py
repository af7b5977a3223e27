"""CIF text → :class:`Crystal`, the minimal periodic description the voxelizer needs.

Parsing follows pymatgen's interpretation of the CIF (symmetry expansion,
occupancies, oxidation-state labels), exactly as the reference voxelizer does.
Species are then reduced to elements: ``Zn2+`` → Zn, deuterium → H, and a
disordered site keeps each species with its occupancy as a weight.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models import cif_checks, cif_dialects, cif_symmetry
from models.errors import (
    DegenerateCellError,
    EmptyStructureError,
    InvalidCIFError,
    OverlappingAtomsError,
    StructureError,
)

if TYPE_CHECKING:
    from pymatgen.io.cif import CifBlock, CifParser

#: Two fully occupied sites closer than this (Å) are the same atom written twice. Kept small on purpose:
#: labelled CoRE MOF 2019 entries (disorder left in the "clean" CIFs) hold atom pairs as close as 0.06 Å,
#: and the reference voxelizer and the GCMC labels accept them.
OVERLAP_TOLERANCE = 0.02
#: Smallest perpendicular width (Å) of a cell we accept.
MIN_CELL_WIDTH = 0.5
#: Decimals kept for the canonical serialisation behind :attr:`Crystal.sha256`.
HASH_DECIMALS = 4

_ISOTOPES = {"D": "H", "T": "H"}


@dataclass(frozen=True)
class Crystal:
    """A periodic crystal reduced to what the energy grid needs.

    Attributes
    ----------
    name : str
        Structure name (file stem or CIF data block).
    lattice : ndarray of shape (3, 3)
        Lattice vectors a, b, c as rows, in Å.
    frac_coords : ndarray of shape (n_sites, 3)
        Fractional coordinates of the sites.
    species : tuple of tuple of (str, float)
        Per site, the (element, occupancy) pairs; an ordered site has one pair
        with occupancy 1.
    """

    name: str
    lattice: np.ndarray
    frac_coords: np.ndarray
    species: tuple[tuple[tuple[str, float], ...], ...]
    _hash: str = field(default="", repr=False, compare=False)

    @property
    def n_atoms(self) -> int:
        """Number of sites in the unit cell."""
        return len(self.species)

    @property
    def volume(self) -> float:
        """Unit-cell volume in Å³."""
        return float(abs(np.linalg.det(self.lattice)))

    @property
    def widths(self) -> np.ndarray:
        """Perpendicular widths (w_a, w_b, w_c) in Å: the distances between opposite cell faces."""
        a, b, c = self.lattice
        v = self.volume
        return np.array([v / np.linalg.norm(np.cross(b, c)),
                         v / np.linalg.norm(np.cross(c, a)),
                         v / np.linalg.norm(np.cross(a, b))])

    @property
    def formula(self) -> str:
        """Reduced-free formula of the cell contents, elements in alphabetical order (e.g. ``C8H4O4Zn2``)."""
        counts: dict[str, float] = {}
        for site in self.species:
            for element, occupancy in site:
                counts[element] = counts.get(element, 0.0) + occupancy
        parts = []
        for element in sorted(counts):
            n = counts[element]
            text = f"{n:g}" if abs(n - round(n)) > 1e-6 else str(int(round(n)))
            parts.append(element + ("" if text == "1" else text))
        return "".join(parts)

    @property
    def elements(self) -> list[str]:
        """Sorted distinct elements."""
        return sorted({el for site in self.species for el, _ in site})

    @property
    def sha256(self) -> str:
        """sha256 of a canonical serialisation (lattice + sorted species/wrapped fractional coordinates).

        Independent of the file name, the site order and formatting: the same
        crystal uploaded twice hashes the same.
        """
        if self._hash:
            return self._hash
        lattice = np.round(self.lattice, HASH_DECIMALS) + 0.0
        frac = np.round(np.mod(self.frac_coords, 1.0), HASH_DECIMALS) % 1.0 + 0.0
        rows = sorted(
            (";".join(f"{el}:{occ:.4f}" for el, occ in sorted(site)), tuple(xyz))
            for site, xyz in zip(self.species, frac.tolist(), strict=True)
        )
        text = repr((lattice.tolist(), rows))
        digest = hashlib.sha256(text.encode()).hexdigest()
        object.__setattr__(self, "_hash", digest)
        return digest


def _element_of(specie: object) -> str:
    symbol = getattr(specie, "symbol", None) or str(specie)
    return _ISOTOPES.get(symbol, symbol)


def crystal_from_pymatgen(structure: object, name: str = "structure") -> Crystal:
    """Build a :class:`Crystal` from a ``pymatgen.core.Structure`` and validate it.

    Raises
    ------
    EmptyStructureError, DegenerateCellError, OverlappingAtomsError
    """
    sites = list(structure)  # type: ignore[call-overload]
    if not sites:
        raise EmptyStructureError(f"{name}: the structure holds no atoms")
    species = []
    for site in sites:
        merged: dict[str, float] = {}
        for specie, occupancy in site.species.items():
            element = _element_of(specie)
            merged[element] = merged.get(element, 0.0) + float(occupancy)
        species.append(tuple(sorted(merged.items())))
    crystal = Crystal(
        name=name,
        lattice=np.array(structure.lattice.matrix, dtype=np.float64),  # type: ignore[attr-defined]
        frac_coords=np.array(structure.frac_coords, dtype=np.float64),  # type: ignore[attr-defined]
        species=tuple(species),
    )
    validate_crystal(crystal)
    return crystal


def validate_crystal(crystal: Crystal) -> None:
    """Refuse cells that cannot be gridded meaningfully.

    Raises
    ------
    EmptyStructureError
        No sites.
    DegenerateCellError
        A perpendicular width below :data:`MIN_CELL_WIDTH` Å (near-zero volume).
    OverlappingAtomsError
        Two sites closer than :data:`OVERLAP_TOLERANCE` Å whose occupancies add
        up to more than one atom.
    """
    if crystal.n_atoms == 0:
        raise EmptyStructureError(f"{crystal.name}: the structure holds no atoms")
    if not np.all(np.isfinite(crystal.lattice)):
        raise DegenerateCellError(f"{crystal.name}: the cell parameters are not finite numbers")
    if not np.all(np.isfinite(crystal.frac_coords)):
        raise InvalidCIFError(f"{crystal.name}: atom coordinates are not finite numbers")
    volume = crystal.volume
    widths = crystal.widths if volume > 0 else np.zeros(3)
    if not math.isfinite(volume) or not np.all(np.isfinite(widths)):
        raise DegenerateCellError(f"{crystal.name}: the cell volume is not a finite number (cell lengths too large)")
    if volume < 1e-6 or widths.min() < MIN_CELL_WIDTH:
        raise DegenerateCellError(
            f"{crystal.name}: degenerate unit cell (volume {volume:.3g} Å³, smallest perpendicular "
            f"width {widths.min():.3g} Å; at least {MIN_CELL_WIDTH} Å is needed)"
        )
    _check_overlaps(crystal)


def _check_overlaps(crystal: Crystal) -> None:
    from scipy.spatial import cKDTree

    # Cartesian positions of the sites and their 26 neighbouring images are enough:
    # the tolerance is far below any cell width we accept.
    frac = np.mod(crystal.frac_coords, 1.0)
    shifts = np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij")).reshape(3, -1).T
    cart = frac @ crystal.lattice
    images = (frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3) @ crystal.lattice
    tree = cKDTree(images)
    occupancy = np.array([sum(occ for _, occ in site) for site in crystal.species])
    n = crystal.n_atoms
    for i, neighbours in enumerate(tree.query_ball_point(cart, OVERLAP_TOLERANCE)):
        for flat in neighbours:
            j = flat % n
            if flat == 13 * n + i:  # the site itself, unshifted
                continue
            if occupancy[i] + occupancy[j] > 1.0 + 1e-3:
                d = float(np.linalg.norm(images[flat] - cart[i]))
                raise OverlappingAtomsError(
                    f"{crystal.name}: atoms {i + 1} ({_label(crystal, i)}) and {j + 1} ({_label(crystal, j)}) "
                    f"overlap ({d:.3f} Å apart; below {OVERLAP_TOLERANCE} Å)"
                )


def _label(crystal: Crystal, i: int) -> str:
    return ",".join(f"{el}:{occ:g}" if occ != 1 else el for el, occ in crystal.species[i])


def _decode(data: bytes, name: str) -> str:
    encoding = cif_checks.utf16_or_32(data)
    if encoding is not None:
        raise InvalidCIFError(f"{name}: the file is {encoding} text; save the CIF as UTF-8 or ASCII")
    if b"\x00" in data:
        raise InvalidCIFError(f"{name}: not a CIF (binary content)")
    try:
        return data.decode("utf-8-sig")  # a byte-order mark (Windows editors write one) is not part of the text
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _cif_text(data: bytes | str, name: str) -> str:
    """The CIF as text after the cheap checks every parse starts with (raises :class:`StructureError`)."""
    text = _decode(data, name) if isinstance(data, bytes) else data.removeprefix("\ufeff")
    text = cif_dialects.canonical_tags(cif_dialects.ascii_lookalikes(text))
    if not text.strip():
        raise InvalidCIFError(f"{name}: the file is empty")
    if "data_" not in text:
        raise InvalidCIFError(f"{name}: not a CIF (no 'data_' block)")
    if "_cell_length_a" not in text:
        raise InvalidCIFError(f"{name}: the CIF has no unit cell (_cell_length_a missing)")
    if "_atom_site_fract_x" not in text:
        if "_atom_site_Cartn_x" in text:
            raise InvalidCIFError(f"{name}: the atom sites have Cartesian coordinates only (_atom_site_Cartn_x); "
                                  "write them as fractional coordinates (_atom_site_fract_x, _y, _z)")
        raise EmptyStructureError(f"{name}: the CIF has no atom sites")
    cif_checks.check_duplicate_tags(text, name)
    return cif_dialects.with_site_labels(text)


def parse_cif_fast(data: bytes | str, name: str = "structure") -> Crystal | None:
    """The fast half of :func:`parse_cif`: its checks (raising the same errors), then the P1 reader.

    Returns None when the file needs pymatgen's ``CifParser`` (symmetry, partial occupancies, unusual tags):
    callers that bound parsing time run :func:`parse_cif` for those elsewhere (``worker.parsing``).
    """
    return _parse_p1_fast(_cif_text(data, name), name)


def parse_cif(data: bytes | str, name: str = "structure", *, fast: bool = True) -> Crystal:
    """Parse CIF text into a validated :class:`Crystal` (pymatgen's interpretation).

    Parameters
    ----------
    data : bytes or str
        The CIF file contents.
    name : str
        Name used in messages and results (typically the file stem).
    fast : bool
        Try the fast reader for plain P1 CIFs first (see :func:`_parse_p1_fast`);
        it yields the same :class:`Crystal` as pymatgen and falls back to
        pymatgen for anything else. False: always pymatgen.

    Raises
    ------
    InvalidCIFError
        Not text, no ``data_`` block, no cell, or pymatgen cannot read it.
    EmptyStructureError, DegenerateCellError, OverlappingAtomsError
        See :func:`validate_crystal`.
    """
    text = _cif_text(data, name)
    if fast:
        crystal = _parse_p1_fast(text, name)
        if crystal is not None:
            return crystal

    from pymatgen.io.cif import CifParser

    parser = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # check_cif=False skips a stoichiometry cross-check that only ever warns.
            parser = CifParser.from_str(text, check_cif=False)
            cif_blocks = list(parser._cif.data.values())  # noqa: SLF001  (the tokenized blocks)
            for cif_block in cif_blocks:
                cif_dialects.rejoin_unquoted_symops(cif_block, text)
            blocks = [block.data for block in cif_blocks]
            cif_checks.check_one_structure(blocks, [block.header for block in cif_blocks], name)
            for block in blocks:
                cif_checks.check_block(block, name)
            for cif_block in cif_blocks:
                _add_declared_operations(parser, cif_block, name)
            structures = parser.parse_structures(primitive=False)
        except StructureError:
            raise
        except Exception as exc:  # pymatgen raises bare ValueError/KeyError/IndexError on bad CIFs
            raise _explain_pymatgen_failure(exc, getattr(parser, "warnings", []), name) from exc
    if not structures:
        raise EmptyStructureError(f"{name}: the CIF holds no readable structure")
    crystal = crystal_from_pymatgen(structures[0], name=name)
    for block in blocks:
        cif_checks.check_declared_size(block, crystal.n_atoms, name)
    return crystal


def _add_declared_operations(parser: CifParser, cif_block: CifBlock, name: str) -> None:
    """Give a block whose space group pymatgen would replace by P1 the operations of the group it declares.

    pymatgen reads a Hall symbol, a full Hermann–Mauguin symbol or an unknown symbol as P1 (it only warns);
    :func:`models.cif_symmetry.declared_operations` resolves them or refuses the file. A rhombohedral symbol on
    rhombohedral axes gets its operations on those axes (:func:`models.cif_symmetry.rhombohedral_axes_operations`).
    """
    data = cif_block.data
    if "_atom_site_fract_x" not in data:
        return
    if operations := cif_symmetry.rhombohedral_axes_operations(data):
        data["_symmetry_equiv_pos_as_xyz"] = operations
        return
    seen = len(parser.warnings)
    parser.get_symops(cif_block)
    fell_back = any("Defaulting to P1" in w for w in parser.warnings[seen:])
    del parser.warnings[seen:]
    if fell_back and (operations := cif_symmetry.declared_operations(data, name)):
        data["_symmetry_equiv_pos_as_xyz"] = operations


#: pymatgen's CifParser defaults, reproduced by the fast reader.
_FRAC_TOLERANCE = 1e-4
_IDEAL_FRACS = (1 / 3, 2 / 3)
_SYMOP_KEYS = ("_symmetry_equiv_pos_as_xyz", "_symmetry_equiv_pos_as_xyz_",
               "_space_group_symop_operation_xyz", "_space_group_symop_operation_xyz_")
_ELEMENT_SYMBOL = re.compile(r"[A-Z][a-z]?")


def _parse_p1_fast(text: str, name: str) -> Crystal | None:
    """Read a plain P1 CIF without pymatgen's per-site Python loops, or return None.

    pymatgen's ``CifParser`` spends most of its time (≈ 0.1-0.3 s for a few
    hundred atoms) applying symmetry operations and merging sites one by one.
    For the common case (one data block, only the identity operation, element
    symbols as type symbols, full occupancies: every CoRE MOF CIF) this
    function reproduces its result exactly with pymatgen's own tokenizer
    (``CifFile``), lattice (``Lattice.from_parameters``) and number parsing:
    coordinates within 1e-4 of 1/3 or 2/3 snapped to them, wrapped into [0, 1)
    with ``x - floor(x)``, sites ordered as ``get_sorted_structure`` orders them
    (electronegativity, then symbol, then file order). Anything else (symmetry,
    partial occupancies, oxidation states, isotopes, odd labels, magnetic CIFs,
    several blocks) returns None and the caller uses pymatgen; so does a
    structure that fails validation, so error messages come from one path.
    """
    try:
        from pymatgen.core import Element, Lattice
        from pymatgen.core.operations import SymmOp
        from pymatgen.io.cif import CifFile, str2float

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blocks = list(CifFile.from_str(text).data.values())
            if len(blocks) != 1:
                return None
            cif_dialects.rejoin_unquoted_symops(blocks[0], text)
            data = blocks[0].data
            cif_checks.check_block(data, name)  # a refused file goes to pymatgen's path, which raises the error
            if any(("magn" in key or "_atom_site_moment" in key or "oxidation_number" in key) for key in data):
                return None
            ops: list[object] = []
            for key in _SYMOP_KEYS:
                if data.get(key):
                    xyz = data[key]
                    try:
                        ops = [SymmOp.from_xyz_str(op) for op in ([xyz] if isinstance(xyz, str) else xyz)]
                        break
                    except ValueError:
                        continue
            identity = np.eye(4)
            if not ops or any(not np.array_equal(op.affine_matrix, identity) for op in ops):  # type: ignore[attr-defined]
                return None
            labels = data.get("_atom_site_label")
            symbols = data.get("_atom_site_type_symbol")
            columns = [data.get(f"_atom_site_fract_{axis}") for axis in "xyz"]
            if not isinstance(labels, list) or not isinstance(symbols, list) or not all(
                isinstance(c, list) and len(c) == len(labels) for c in columns
            ) or len(symbols) != len(labels) or not labels:
                return None
            cif_checks.check_declared_size(data, len(labels), name)
            occupancies = data.get("_atom_site_occupancy")
            if occupancies is not None:
                if not isinstance(occupancies, list) or len(occupancies) != len(labels):
                    return None
                if any(str2float(o) != 1.0 for o in occupancies):
                    return None
            electronegativity: dict[str, float] = {}
            for symbol in set(symbols):
                if symbol in ("D", "T") or not _ELEMENT_SYMBOL.fullmatch(symbol) or not Element.is_valid_symbol(symbol):
                    return None
                x = float(Element(symbol).X)
                if not math.isfinite(x):
                    return None
                electronegativity[symbol] = x
            lengths = [str2float(data[f"_cell_length_{i}"]) for i in "abc"]
            angles = [str2float(data[f"_cell_angle_{i}"]) for i in ("alpha", "beta", "gamma")]
            lattice = Lattice.from_parameters(*lengths, *angles)
            if min(lattice.d_hkl(hkl) for hkl in ((1, 0, 0), (0, 1, 0), (0, 0, 1))) < 0.01:
                return None
            frac = np.array([[float(v) if "(" not in v else str2float(v) for v in c] for c in columns]).T
        for ideal in _IDEAL_FRACS:
            frac = np.where(np.abs(frac / ideal - 1.0) <= _FRAC_TOLERANCE, float(str(ideal)), frac)
        frac = frac - np.floor(frac)
        order = sorted(range(len(symbols)), key=lambda i: (electronegativity[symbols[i]], symbols[i], i))
        crystal = Crystal(
            name=name,
            lattice=np.array(lattice.matrix, dtype=np.float64),
            frac_coords=np.ascontiguousarray(frac[order], dtype=np.float64),
            species=tuple(((symbols[i], 1.0),) for i in order),
        )
        validate_crystal(crystal)
    except Exception:  # anything unusual: let pymatgen (and its precise errors) handle it
        return None
    return crystal


#: What pymatgen's CIF tokenizer says about a loop whose values do not fill its columns.
_LOOP_FAILURES = ("is not a multiple of", "modulo by zero", "zip() argument")


def _explain_pymatgen_failure(exc: Exception, parser_warnings: list[str], name: str) -> StructureError:
    """Turn pymatgen's generic failure ("Invalid CIF file with no structures!") into a precise error.

    pymatgen records why it dropped each data block in ``CifParser.warnings``;
    the reasons we recognise map to their own error types.
    """
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if any(phrase in reason for phrase in _LOOP_FAILURES):
        return InvalidCIFError(f"{name}: a loop_ does not hold whole rows of values (the file is truncated, a row "
                               f"is incomplete or a loop has no tags; pymatgen: {reason})")
    if "no structures" not in reason.lower():
        return InvalidCIFError(f"{name}: pymatgen cannot read this CIF ({reason})")
    details = [w.split("\n", 1)[1].strip() for w in parser_warnings
               if w.startswith("No structure parsed") and "\n" in w]
    for detail in details:
        occupancy = re.search(r"Occupancy ([0-9.]+) exceeded tolerance", detail)
        if occupancy:
            return OverlappingAtomsError(
                f"{name}: sites at the same position hold a total occupancy of {float(occupancy.group(1)):g} "
                "(more than one atom; a site is probably written twice)"
            )
        if "thickness" in detail and "below threshold" in detail:
            chunk = detail.split("]")[0].replace("np.float64", "").replace("float64", "")
            widths = [float(x) for x in re.findall(r"\d+(?:\.\d*)?(?:[eE][-+]?\d+)?", chunk)]
            smallest = f"{min(widths):.3g} Å" if widths else "near zero"
            return DegenerateCellError(
                f"{name}: degenerate unit cell (smallest perpendicular width {smallest}; at least "
                f"{MIN_CELL_WIDTH} Å is needed): check the cell lengths and angles"
            )
    if any(re.search(r"'_atom_site_(label|type_symbol|fract_[xyz])'", d) for d in details):
        return EmptyStructureError(f"{name}: the CIF has no readable atom sites")
    if details:
        return InvalidCIFError(f"{name}: pymatgen cannot read this CIF ({details[0].splitlines()[0]})")
    return EmptyStructureError(f"{name}: the CIF holds no readable atom sites")


def _looks_like_path(text: str) -> bool:
    """A one-line string that names a ``.cif`` file or an existing file (CIF text always has newlines)."""
    if "\n" in text or "\r" in text or len(text) > 4096:
        return False
    return text.lower().endswith(".cif") or Path(text).is_file()


def load_crystal(source: str | Path | bytes | object, name: str | None = None) -> Crystal:
    """Load a :class:`Crystal` from a path, CIF bytes/text, a pymatgen Structure or a Crystal."""
    if isinstance(source, Crystal):
        return source
    if isinstance(source, Path) or (isinstance(source, str) and _looks_like_path(source)):
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidCIFError(f"{path}: cannot read file ({exc.strerror})") from exc
        return parse_cif(data, name=name or path.stem)
    if isinstance(source, bytes | str):
        return parse_cif(source, name=name or "structure")
    if hasattr(source, "lattice") and hasattr(source, "frac_coords"):
        return crystal_from_pymatgen(source, name=name or "structure")
    raise TypeError(f"cannot load a crystal from {type(source).__name__}")


__all__: Sequence[str] = [
    "Crystal",
    "StructureError",
    "crystal_from_pymatgen",
    "load_crystal",
    "parse_cif",
    "validate_crystal",
]
