"""Space groups a CIF declares in a form pymatgen does not read.

pymatgen's ``CifParser`` takes a block's symmetry operations from its symop loop, else from a short
Hermann–Mauguin symbol or an International Tables number it knows. Anything else (a Hall symbol such as
``-F 4 2 3``, a full symbol such as ``F 4/m -3 2/m``, a misspelt or invented symbol, a number outside 1–230)
it replaces by P1 with a warning, so the file silently becomes a different crystal: one atom where it means
four. :func:`declared_operations` resolves such declarations from spglib's table of the 530 Hall settings,
and refuses the file (naming the tag and the value) when the declared group cannot be resolved.

A rhombohedral symbol without ``:H`` or ``:R`` (``R -3``) pymatgen reads on hexagonal axes, the International
Tables' default; on a cell with rhombohedral axes (a = b = c, α = β = γ ≠ 90°) that adds the hexagonal centring
to the wrong axes, another crystal. :func:`rhombohedral_axes_operations` gives such a block its group on
rhombohedral axes.

Blocks are the ``dict`` of one ``pymatgen.io.cif.CifBlock`` (``tag → str | list[str]``); tags are matched
without regard to case, as CIF tags are case-insensitive.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from functools import cache
from typing import Any

from models.cif_checks import CELL_ANGLES, CELL_LENGTHS, SYMOP_KEYS, cif_number
from models.errors import InvalidCIFError

#: Tags naming the space group, in the order they are tried (a Hall symbol fixes the setting; a number does not).
HALL_TAGS = ("_space_group_name_hall", "_symmetry_space_group_name_hall")
SYMBOL_TAGS = ("_space_group_name_h-m_alt", "_symmetry_space_group_name_h-m", "_symmetry_space_group_name_h_m",
               "_space_group_name_h-m")
NUMBER_TAGS = ("_space_group_it_number", "_symmetry_int_tables_number")

_UNKNOWN = ("", "?", ".")


def _declared(block: Mapping[str, Any], tag: str) -> tuple[str, str] | None:
    """``(key as written, value unquoted)`` of ``tag`` (or of ``tag`` with pymatgen's tolerated trailing
    underscore); None when absent or unknown (``?``, ``.``)."""
    for key, value in block.items():
        if key.lower().rstrip("_") == tag:
            text = value[0] if isinstance(value, list) and len(value) == 1 else value
            if not isinstance(text, str):
                return None
            text = text.strip()  # the tokenizer has removed the quotes; a Hall symbol may end in '"'
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
                text = text[1:-1].strip()
            return None if text in _UNKNOWN else (key, text)
    return None


def _hall_key(symbol: str) -> str:
    """A Hall symbol with underscores read as spaces and runs of spaces collapsed (``-P 2ybc``)."""
    return " ".join(symbol.replace("_", " ").split()).lower()


def _symbol_key(symbol: str) -> str:
    """A Hermann–Mauguin symbol without spaces or underscores (``P 1 21/c 1`` → ``P121/c1``)."""
    return re.sub(r"[\s_]", "", symbol)


@cache
def _hall_table() -> tuple[dict[str, int], dict[str, int], dict[int, int]]:
    """Hall symbol → Hall number, H-M symbol (short, long, full, each with and without ``:setting``) → the first
    Hall number that has it, and space-group number → its first (standard) Hall number."""
    import spglib

    by_hall: dict[str, int] = {}
    by_symbol: dict[str, int] = {}
    by_number: dict[int, int] = {}
    for hall_number in range(1, 531):
        with warnings.catch_warnings():  # spglib 2.x: "Set OLD_ERROR_HANDLING to false", for its None returns
            warnings.simplefilter("ignore", DeprecationWarning)
            group = spglib.get_spacegroup_type(hall_number)
        if group is None:  # pragma: no cover  (spglib knows all 530)
            continue
        by_hall.setdefault(_hall_key(group.hall_symbol), hall_number)
        by_number.setdefault(group.number, hall_number)
        for name in (group.international_short, group.international, group.international_full):
            by_symbol.setdefault(_symbol_key(name), hall_number)
            if group.choice:
                by_symbol.setdefault(_symbol_key(f"{name}:{group.choice}"), hall_number)
    return by_hall, by_symbol, by_number


def _operations(hall_number: int) -> list[str]:
    """The symmetry operations of one Hall setting as ``x, y, z`` strings (translations as fractions)."""
    import spglib
    from pymatgen.core.operations import SymmOp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        table = spglib.get_symmetry_from_database(hall_number)
    return [SymmOp.from_rotation_and_translation(rotation, translation).as_xyz_str()
            for rotation, translation in zip(table["rotations"], table["translations"], strict=True)]


def _resolve(tag: str, value: str) -> int | None:
    """The Hall number that ``value`` of ``tag`` names, or None."""
    by_hall, by_symbol, by_number = _hall_table()
    if tag in HALL_TAGS:
        return by_hall.get(_hall_key(value))
    if tag in SYMBOL_TAGS:
        key = _symbol_key(value)
        return by_symbol.get(key) or by_symbol.get(key[:1].upper() + key[1:])
    try:
        number = float(value.split("(", 1)[0])
    except ValueError:
        return None
    return by_number.get(int(number)) if number.is_integer() else None


def declared_operations(block: Mapping[str, Any], name: str) -> list[str] | None:
    """Symmetry operations of the space group the block declares, for a block pymatgen read as P1 by default.

    Call it only for a block without a usable symop loop whose group pymatgen could not resolve. Returns None
    when the block declares no space group, or P1; the operations (``x, y, z`` strings) of the first
    declaration that resolves (Hall symbol first, then a Hermann–Mauguin symbol, then the number: its standard
    setting); raises :class:`InvalidCIFError` naming the tag when the block declares a group that none of its
    tags resolves.
    """
    declared = [(tag, *found) for tag in (*HALL_TAGS, *SYMBOL_TAGS, *NUMBER_TAGS)
                if (found := _declared(block, tag)) is not None]
    if not declared:
        return None
    for tag, _, value in declared:
        hall_number = _resolve(tag, value)
        if hall_number is not None:
            return None if hall_number == 1 else _operations(hall_number)
    _, tag, value = declared[0]
    raise InvalidCIFError(
        f"{name}: the space group {value!r} ({tag}) is not one we can read and the file gives no symmetry "
        "operations: add a _symmetry_equiv_pos_as_xyz loop or write the structure in P1"
    )


def _cell(block: Mapping[str, Any]) -> tuple[float, ...] | None:
    """(a, b, c, α, β, γ) of the block, or None when a parameter is missing or not a number."""
    try:
        return tuple(cif_number(str(block[tag])) for tag in (*CELL_LENGTHS, *CELL_ANGLES))
    except Exception:  # noqa: BLE001  (missing, unknown or not a number: cif_checks refuses bad cells by name)
        return None


def rhombohedral_axes_operations(block: Mapping[str, Any]) -> list[str] | None:
    """The operations of a rhombohedral group on rhombohedral axes, for a block without a symop loop that declares
    ``R …`` without ``:H``/``:R`` on a cell with rhombohedral axes; None for any other block."""
    if any(block.get(key) for key in SYMOP_KEYS):
        return None
    declared = next((found for tag in SYMBOL_TAGS if (found := _declared(block, tag)) is not None), None)
    if declared is None or not declared[1].startswith("R") or ":" in declared[1]:
        return None
    cell = _cell(block)
    if cell is None:
        return None
    a, b, c, alpha, beta, gamma = cell
    if not (abs(a - b) <= 1e-3 * a and abs(a - c) <= 1e-3 * a and abs(alpha - beta) <= 0.01
            and abs(alpha - gamma) <= 0.01 and abs(alpha - 90.0) > 0.01):
        return None
    hall_number = _hall_table()[1].get(_symbol_key(f"{declared[1]}:R"))
    return None if hall_number is None else _operations(hall_number)
