"""CIF written in ways that say one crystal unambiguously but that pymatgen's reader does not take.

Each function rewrites one such way into the form pymatgen reads, before any check runs, so the checks of
:mod:`models.cif_checks` and the parse see the crystal the author meant:

- CIF2 / DDLm tag names (``_atom_site.fract_x``) → their DDL1 aliases (``_atom_site_fract_x``), and the tags
  the parse reads in any letter case (``_CELL_LENGTH_A``: CIF tags are case-insensitive) → the case pymatgen
  looks up;
- a symmetry-operation loop whose operations hold spaces but no quotes (``x, y, z``), which the CIF tokenizer
  splits into ``'x,'``, ``'y,'``, ``'z'`` → whole operations again;
- an atom-site loop without ``_atom_site_label`` (the type symbols serve as labels, as the labels serve as type
  symbols when those are missing);
- typographic characters of text pasted from papers (the minus sign U+2212 and other dashes, no-break and
  other Unicode spaces, zero-width characters) → their ASCII meaning: pymatgen's tokenizer deletes every
  non-ASCII character, which turns ``−0.25`` into ``0.25``.

The tag and label rewrites work on the text (pymatgen's ``CifParser`` needs both before its first step); the
operation rewrite on a tokenized block (``pymatgen.io.cif.CifBlock``: its ``data`` dict and ``loops`` list of tag
lists), before the checks see it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from models.cif_checks import SYMOP_KEYS, symop_problem

if TYPE_CHECKING:
    from pymatgen.io.cif import CifBlock

#: Typographic characters → ASCII: minus sign and dashes (U+2010–U+2013, U+2212, small and full-width
#: hyphen-minus) → ``-``; no-break, thin and other Unicode spaces → `` ``; zero-width characters → nothing.
_ASCII_LOOKALIKES = str.maketrans(
    {**dict.fromkeys("\u2010\u2011\u2012\u2013\u2212\ufe63\uff0d", "-"),
     **dict.fromkeys("\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                     "\u202f\u205f\u3000", " "),
     **dict.fromkeys("\u200b\u200c\u200d\u2060\ufeff", None)})
#: A tag at the start of a line.
_TAG = re.compile(r"^[ \t]*(_\S+)", re.MULTILINE)
#: The tags that the parse and the checks read, as pymatgen (case-sensitive) looks them up.
READ_TAGS = (
    "_cell_length_a", "_cell_length_b", "_cell_length_c", "_cell_angle_alpha", "_cell_angle_beta",
    "_cell_angle_gamma", "_cell_volume", "_cell_formula_units_Z", "_chemical_formula_sum",
    "_atom_site_label", "_atom_site_type_symbol", "_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z",
    "_atom_site_Cartn_x", "_atom_site_Cartn_y", "_atom_site_Cartn_z", "_atom_site_occupancy",
    "_atom_site_attached_hydrogens", "_atom_type_symbol", "_atom_type_oxidation_number",
    "_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz", "_symmetry_equiv_pos_site_id",
    "_space_group_symop_id", "_symmetry_space_group_name_H-M", "_space_group_name_H-M_alt", "_space_group_name_Hall",
    "_symmetry_space_group_name_Hall", "_symmetry_Int_Tables_number", "_space_group_IT_number",
)
_CANONICAL = {tag.lower(): tag for tag in READ_TAGS}
_LABEL_TAG = re.compile(r"^[ \t]*_atom_site_label\s", re.MULTILINE | re.IGNORECASE)
_SYMBOL_TAG = re.compile(r"^[ \t]*_atom_site_type_symbol\s", re.MULTILINE | re.IGNORECASE)


def ascii_lookalikes(text: str) -> str:
    """Typographic minus signs, dashes, spaces and zero-width characters as their ASCII meaning (see the module
    docstring); ASCII text comes back as it is."""
    return text if text.isascii() else text.translate(_ASCII_LOOKALIKES)


def _canonical(match: re.Match[str]) -> str:
    tag = match.group(1)
    if "magn" in tag.lower():  # magnetic CIF: pymatgen reads its dotted names as written
        return match.group(0)
    undotted = tag.replace(".", "_", 1) if "." in tag else tag
    canonical = _CANONICAL.get(undotted.lower(), undotted)
    return match.group(0) if canonical == tag else match.group(0)[: match.start(1) - match.start(0)] + canonical


def canonical_tags(text: str) -> str:
    """Tags in the form pymatgen reads: CIF2 / DDLm names (``_atom_site.fract_x``, ``_space_group.name_H-M_alt``)
    as their DDL1 aliases (the dictionaries define each dotted name as the alias with the dot written ``_``), and
    the tags of :data:`READ_TAGS` in their usual case whatever case the file writes them in (CIF tags are
    case-insensitive; pymatgen's lookups are not). Other tags, and magnetic-CIF tags, are left as written."""
    return _TAG.sub(_canonical, text)


def with_site_labels(text: str) -> str:
    """The CIF with ``_atom_site_label`` added where an atom-site loop has type symbols but no labels (the
    symbols serve as labels; pymatgen fails on a missing label). Other files come back unchanged, untokenized."""
    if _LABEL_TAG.search(text) or not _SYMBOL_TAG.search(text):
        return text
    from pymatgen.io.cif import CifFile

    try:
        cif = CifFile.from_str(text)
    except Exception:  # noqa: BLE001  (a file the tokenizer cannot read gets its precise error from the parse)
        return text
    changed = False
    for block in cif.data.values():
        symbols = block.data.get("_atom_site_type_symbol")
        loop = next((tags for tags in block.loops if "_atom_site_type_symbol" in tags), None)
        if loop is not None and isinstance(symbols, list) and "_atom_site_label" not in block.data:
            block.data["_atom_site_label"] = list(symbols)
            loop.insert(0, "_atom_site_label")
            changed = True
    return str(cif) if changed else text


def _rejoined(tokens: list[str], text: str) -> list[str] | None:
    """Tokens of unquoted operations joined back into operations of three components, or None when they do
    not make whole valid operations, each on a line of its own in ``text`` without quotes (the tokenizer also
    splits a quote left open, ``'x, y, z``, into these tokens: that file stays refused)."""
    operations: list[str] = []
    pending: list[str] = []
    for token in tokens:
        pending.append(token)
        if " ".join(pending).count(",") == 2 and not token.endswith(","):
            line = r"[ \t]+".join(map(re.escape, pending))
            if not re.search(rf"^[ \t]*{line}[ \t]*$", text, re.MULTILINE):
                return None
            operations.append(" ".join(pending))
            pending = []
    if pending or any(symop_problem(op) is not None for op in operations):
        return None
    return operations


def rejoin_unquoted_symops(block: CifBlock, text: str) -> None:
    """Operations written ``x, y, z`` without quotes, each in a one-column loop, joined back into operations.

    Only a loop of that one column is rejoined (another column would have misaligned the rows), and only when
    every rejoined operation is valid and stands on its own line of ``text`` (the CIF the block was tokenized
    from); otherwise the loop is left for :func:`models.cif_checks.check_symops` to refuse, naming the bad
    token.
    """
    data, loops = block.data, block.loops
    for key in SYMOP_KEYS:
        tokens = data.get(key)
        if not isinstance(tokens, list) or all(symop_problem(t) is None for t in tokens):
            continue
        if [key] not in loops:
            continue
        operations = _rejoined(tokens, text)
        if operations is not None:
            data[key] = operations
