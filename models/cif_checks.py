"""Checks of CIF content that pymatgen lets through or answers with an unrelated exception.

pymatgen's ``CifParser`` is lenient: it overwrites duplicated tags, reads ``'q+1,z,y'`` as a symmetry
operation, drops atoms with a NaN occupancy or a numeric element, flips a negative cell length and turns a
1e308 coordinate into 0. Each check here raises a :class:`~models.errors.StructureError` subclass with a
message naming the tag, the atom site and the value instead, so a corrupt file never becomes a silently
different crystal. :mod:`models.structure` runs them on every parse (fast P1 reader and pymatgen path alike).

Blocks are the ``dict`` of one ``pymatgen.io.cif.CifBlock`` (``tag → str | list[str]``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.errors import DegenerateCellError, InvalidCIFError

#: Longest cell edge (Å) accepted: beyond it a number is corrupt, not a crystal (the longest of the 12,020
#: CoRE MOF 2019-ASR cells is 191.7 Å).
MAX_CELL_LENGTH = 1000.0
#: Largest |fractional coordinate| accepted (real files stay within a cell or two of the origin).
MAX_ABS_FRACTIONAL = 1000.0
#: Occupancies above 1 by more than this are refused.
OCCUPANCY_SLACK = 1e-3
#: A CIF declaring (formula sum × Z) more than this many times the atoms it holds is truncated or corrupt.
MAX_DECLARED_RATIO = 100

CELL_LENGTHS = ("_cell_length_a", "_cell_length_b", "_cell_length_c")
CELL_ANGLES = ("_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma")
SYMOP_KEYS = ("_symmetry_equiv_pos_as_xyz", "_symmetry_equiv_pos_as_xyz_", "_space_group_symop_operation_xyz",
              "_space_group_symop_operation_xyz_")

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?:\(\d+\))?")
_UNKNOWN = ("?", ".")
# One term of a symmetry operation component: a constant (1/2, 0.25), an axis (x) or a multiple (2x, 1/2*x).
_SYMOP_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)"
_SYMOP_TERM = rf"(?:{_SYMOP_NUM}(?:/{_SYMOP_NUM})?(?:\*?[xyz])?|[xyz])"
_SYMOP_COMPONENT = re.compile(rf"[+-]?{_SYMOP_TERM}(?:[+-]{_SYMOP_TERM})*")
_FORMULA_TERM = re.compile(r"([A-Z][a-z]?)(\d*\.?\d*)")
_UNCERTAINTY = re.compile(r"\(\d+\)")
#: The first token of each line when it is a tag or a block header (``_cell_length_a``, ``data_x``).
_LINE_START = re.compile(r"^[ \t]*+((?:_|data_|save_|global_)\S*)", re.MULTILINE | re.IGNORECASE)
_SYMBOL_COLUMN = re.compile(r"[A-Za-z][^\n]*(?:\n[A-Za-z][^\n]*)*")


class _Unknown(Exception):
    """A CIF value written ``?`` or ``.`` (unknown / inapplicable)."""


def cif_number(value: str) -> float:
    """A CIF numeric value (``11.627(3)``, ``1e-3``) as float.

    Raises ``_Unknown`` for ``?``/``.`` and ``ValueError`` for anything that is not a CIF number (``nan``,
    ``inf``, words). Overflowing exponents (``1e309``) give ``inf``.
    """
    text = value.strip().strip("'\"")
    if text in _UNKNOWN:
        raise _Unknown(text)
    if not _NUMBER.fullmatch(text):
        raise ValueError(text)
    return float(text.split("(", 1)[0])


def _single(block: Mapping[str, Any], tag: str) -> str | None:
    value = block.get(tag)
    if isinstance(value, list):
        return value[0] if len(value) == 1 else "<a list of values>"
    return value


def _finite(value: str, what: str, name: str) -> float:
    """``value`` as a finite float, else an :class:`InvalidCIFError` naming ``what``."""
    try:
        number = cif_number(value)
    except _Unknown:
        raise InvalidCIFError(f"{name}: {what} is unknown ({value.strip()!r})") from None
    except ValueError:
        raise InvalidCIFError(f"{name}: {what} is not a number ({value.strip()[:40]!r})") from None
    if not math.isfinite(number):
        raise InvalidCIFError(f"{name}: {what} is not a finite number ({value.strip()[:40]!r})")
    return number


def check_cell(block: Mapping[str, Any], name: str) -> None:
    """All six cell parameters present, finite, lengths in (0, MAX_CELL_LENGTH] Å, angles in (0°, 180°)."""
    for tag in CELL_LENGTHS + CELL_ANGLES:
        value = _single(block, tag)
        if value is None:
            raise InvalidCIFError(f"{name}: the CIF has no {tag}")
        number = _finite(value, tag, name)
        if tag in CELL_LENGTHS and number <= 0:
            raise DegenerateCellError(f"{name}: {tag} is {number:g} Å; cell lengths must be positive")
        if tag in CELL_LENGTHS and number > MAX_CELL_LENGTH:
            raise InvalidCIFError(f"{name}: {tag} is {number:g} Å, above {MAX_CELL_LENGTH:g} Å: not a crystal cell")
        if tag in CELL_ANGLES and not 0 < number < 180:
            raise DegenerateCellError(f"{name}: {tag} is {number:g}°; cell angles must lie strictly between 0° "
                                      "and 180°")
    _check_angles_close_a_cell([cif_number(str(_single(block, tag))) for tag in CELL_ANGLES], name)


def _check_angles_close_a_cell(angles: list[float], name: str) -> None:
    """α, β, γ must be able to form three vectors: 1 − Σcos² + 2Πcos ≥ 0 (the squared volume factor)."""
    c = [math.cos(math.radians(a)) for a in angles]
    factor = 1 - c[0] ** 2 - c[1] ** 2 - c[2] ** 2 + 2 * c[0] * c[1] * c[2]
    if factor < -1e-9:
        shown = ", ".join(f"{a:g}°" for a in angles)
        raise DegenerateCellError(f"{name}: cell angles α, β, γ = {shown} cannot form a cell (no three vectors "
                                  "have these angles)")


def symop_problem(op: str) -> str | None:
    """Why ``op`` (``'-x+1/2, y, z'``) is not a symmetry operation, or None when it is one."""
    components = op.replace(" ", "").lower().split(",")
    if len(components) != 3:
        return f"{len(components)} component(s) instead of 3"
    for component in components:
        if not _SYMOP_COMPONENT.fullmatch(component):
            return f"cannot read {component!r}"
        if re.search(r"/0*(?:\.0*)?(?![\d.])", component):
            return f"division by zero in {component!r}"
    from pymatgen.core.operations import SymmOp

    det = float(abs(np.linalg.det(SymmOp.from_xyz_str(op).rotation_matrix)))
    if abs(det - 1.0) > 1e-6:
        return f"not invertible (determinant {det:g}; a crystallographic operation has ±1)"
    return None


def check_symops(block: Mapping[str, Any], name: str) -> None:
    """Every symmetry operation of the block reads as x, y, z expressions with an invertible rotation."""
    for key in SYMOP_KEYS:
        value = block.get(key)
        if value is None:
            continue
        for op in [value] if isinstance(value, str) else value:
            why = symop_problem(op)
            if why is not None:
                raise InvalidCIFError(f"{name}: invalid symmetry operation {op!r} in {key} ({why})")


def _column(block: Mapping[str, Any], tag: str, n: int) -> list[str] | None:
    value = block.get(tag)
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    return values if len(values) == n else None


def _site(labels: Sequence[str], i: int) -> str:
    return f"atom site {i + 1} ({labels[i]!r})" if i < len(labels) else f"atom site {i + 1}"


def _all_numbers_within(values: Sequence[str], low: float, high: float) -> bool:
    """True when every value is a finite number in [low, high], converted by numpy for the whole column at once
    (uncertainties such as ``0.25(3)`` dropped first); False sends the caller to the per-value loop that names
    the bad value."""
    try:
        numbers = np.array(values, dtype=np.float64)
    except ValueError:
        if not any("(" in v for v in values):
            return False
        try:
            numbers = np.array(_UNCERTAINTY.sub("", "\n".join(values)).split("\n"), dtype=np.float64)
        except ValueError:
            return False
    return bool(np.all(np.isfinite(numbers)) and np.all(numbers >= low) and np.all(numbers <= high))


def _check_coordinates(block: Mapping[str, Any], labels: list[str], name: str) -> None:
    for kind in ("fract", "Cartn"):
        bound = MAX_ABS_FRACTIONAL if kind == "fract" else math.inf
        for axis in "xyz":
            values = _column(block, f"_atom_site_{kind}_{axis}", len(labels)) or []
            if _all_numbers_within(values, -bound, bound):
                continue
            for i, value in enumerate(values):
                what = f"{_site(labels, i)}: {'fractional' if kind == 'fract' else 'Cartesian'} coordinate {axis}"
                number = _finite(value, what, name)
                if abs(number) > bound:
                    raise InvalidCIFError(f"{name}: {what} is {number:g}, far outside the cell")


def _check_occupancies(block: Mapping[str, Any], labels: list[str], name: str) -> None:
    values = _column(block, "_atom_site_occupancy", len(labels)) or []
    if _all_numbers_within(values, 0.0, 1.0 + OCCUPANCY_SLACK):
        return
    for i, value in enumerate(values):
        if value.strip() in _UNKNOWN:
            continue
        occupancy = _finite(value, f"{_site(labels, i)}: occupancy", name)
        if not 0 <= occupancy <= 1 + OCCUPANCY_SLACK:
            raise InvalidCIFError(f"{name}: {_site(labels, i)}: occupancy {occupancy:g} is outside [0, 1]")


def _check_elements(block: Mapping[str, Any], labels: list[str], name: str) -> None:
    symbols = _column(block, "_atom_site_type_symbol", len(labels))
    if symbols is not None and _SYMBOL_COLUMN.fullmatch("\n".join(symbols)):
        return
    for i in range(len(labels)):
        symbol = symbols[i].strip() if symbols is not None else ""
        if symbols is None or symbol in _UNKNOWN:
            symbol = labels[i].strip()
        if not symbol[:1].isascii() or not symbol[:1].isalpha():
            raise InvalidCIFError(f"{name}: {_site(labels, i)} has no element symbol (type symbol "
                                  f"{symbols[i] if symbols is not None else None!r})")


def check_atom_sites(block: Mapping[str, Any], name: str) -> None:
    """Coordinates finite (fractional ones within ±MAX_ABS_FRACTIONAL), occupancies in [0, 1], an element each."""
    labels = block.get("_atom_site_label") or block.get("_atom_site_type_symbol") or []
    labels = [labels] if isinstance(labels, str) else list(labels)
    _check_coordinates(block, labels, name)
    _check_occupancies(block, labels, name)
    _check_elements(block, labels, name)


def check_block(block: Mapping[str, Any], name: str) -> None:
    """Every check of one data block that holds atom sites (blocks without any are left to the parser)."""
    if not any(f"_atom_site_{kind}_x" in block for kind in ("fract", "Cartn")):
        return
    check_cell(block, name)
    check_symops(block, name)
    check_atom_sites(block, name)


def check_one_structure(blocks: Sequence[Mapping[str, Any]], headers: Sequence[str], name: str) -> None:
    """At most one data block holds atom sites: a file of several structures is refused, naming them, rather than
    predicted for its first structure alone."""
    with_atoms = [header for block, header in zip(blocks, headers, strict=True)
                  if any(f"_atom_site_{kind}_x" in block for kind in ("fract", "Cartn"))]
    if len(with_atoms) > 1:
        listed = ", ".join(f"data_{h}" for h in with_atoms[:5]) + (", …" if len(with_atoms) > 5 else "")
        raise InvalidCIFError(f"{name}: the CIF holds {len(with_atoms)} structures ({listed}); give one structure "
                              "per file (a zip of files for a screening)")


def declared_atoms(block: Mapping[str, Any]) -> float | None:
    """Atoms per cell the block declares: ``_chemical_formula_sum`` × ``_cell_formula_units_Z`` (None: unsaid)."""
    formula, z = _single(block, "_chemical_formula_sum"), _single(block, "_cell_formula_units_Z")
    if not formula or not z:
        return None
    try:
        units = cif_number(z)
    except (_Unknown, ValueError):
        return None
    total = sum(float(count) if count not in ("", ".") else 1.0 for _, count in _FORMULA_TERM.findall(formula))
    return total * units if total > 0 and math.isfinite(units) else None


def check_declared_size(block: Mapping[str, Any], n_atoms: int, name: str) -> None:
    """Refuse a file whose atom sites are a tiny fraction of what it declares (a truncated or corrupt loop)."""
    declared = declared_atoms(block)
    if declared is not None and declared > MAX_DECLARED_RATIO * max(n_atoms, 1):
        raise InvalidCIFError(
            f"{name}: the CIF declares {declared:,.0f} atoms per cell (_chemical_formula_sum × "
            f"_cell_formula_units_Z) but its atom sites give {n_atoms}: the file is truncated or corrupt"
        )


def check_duplicate_tags(text: str, name: str) -> None:
    """No tag twice in one data block, and no data block name twice (pymatgen keeps the last value, loop or
    block silently)."""
    if not text.startswith(";") and "\n;" not in text and "\r;" not in text:  # no text field: one regex pass
        tokens = [t.lower() for t in _LINE_START.findall(text)]
        if len(set(tokens)) == len(tokens):
            return
    seen: set[str] = set()
    blocks: set[str] = set()
    in_text_field = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith(";"):
            in_text_field = not in_text_field
            continue
        if in_text_field:
            continue
        token = line.split(None, 1)[0].lower() if line.strip() else ""
        if token.startswith(("data_", "save_", "global_")):
            seen.clear()
            if token.startswith("data_"):
                if token in blocks:
                    raise InvalidCIFError(f"{name}: data block {token} appears twice (line {number}); each block "
                                          "needs its own name")
                blocks.add(token)
        elif token.startswith("_"):
            if token in seen:
                raise InvalidCIFError(f"{name}: tag {token} appears twice in one data block (line {number})")
            seen.add(token)


def utf16_or_32(data: bytes) -> str | None:
    """``"UTF-16"``/``"UTF-32"`` when the bytes look like text in that encoding (BOM or NUL pattern), else None."""
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "UTF-32"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    head = data[:4096]
    if len(head) < 8:
        return None
    even, odd = head[0::2], head[1::2]
    little_endian = even.count(0) == 0 and odd.count(0) >= 0.9 * len(odd)
    big_endian = odd.count(0) == 0 and even.count(0) >= 0.9 * len(even)
    return "UTF-16" if little_endian or big_endian else None
