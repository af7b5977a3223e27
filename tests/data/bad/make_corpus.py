"""Write the broken-CIF corpus of ``tests/data/bad/`` (the generated files are committed next to this script).

Every file is derived from the real CoRE MOF 2019 CIF ``tests/data/cifs/KEGZOL04_clean.cif`` (or is pure
garbage) and must be refused by ``models.structure.parse_cif`` / ``models.voxels.compute_voxels`` with a
``models.errors.StructureError`` (``tests/unit/models/test_bad_corpus.py``) and by ``POST /predict`` with a 4xx.
Deterministic: running it again rewrites the same bytes. Usage::

    python tests/data/bad/make_corpus.py            # writes the files into tests/data/bad/
    python tests/data/bad/make_corpus.py --check    # exit 1 when a committed file differs from what it writes
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "cifs" / "KEGZOL04_clean.cif"
#: Files of this folder that are hand-made, not written by this script (see tests/data/README.md).
HAND_MADE = ("coplanar_cell.cif", "empty.cif", "flat_cell.cif", "no_atoms.cif", "not_a_cif.png",
             "overlapping_atoms.cif", "plain_text.cif", "unknown_element_Tc.cif")

ATOM_HEADER = """loop_
  _atom_site_label
  _atom_site_occupancy
  _atom_site_fract_x
  _atom_site_fract_y
  _atom_site_fract_z
  _atom_site_thermal_displace_type
  _atom_site_B_iso_or_equiv
  _atom_site_type_symbol
"""


def source() -> str:
    """The real CIF every variant starts from (LF line endings)."""
    return SOURCE.read_text().replace("\r\n", "\n")


def _atom_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("  ") and line.split()[0][:1].isupper()
            and len(line.split()) == 8]


def replace_once(text: str, old: str, new: str) -> str:
    """``text`` with the one occurrence of ``old`` replaced (fails loudly when the source changes)."""
    if text.count(old) != 1:
        raise ValueError(f"{old!r} occurs {text.count(old)} times in {SOURCE.name}")
    return text.replace(old, new)


def set_tag(text: str, tag: str, value: str) -> str:
    """Set the value of a one-line tag such as ``_cell_length_a``."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.split()[:1] == [tag]]
    if len(hits) != 1:
        raise ValueError(f"{tag} occurs {len(hits)} times")
    lines[hits[0]] = f"{tag:<20} {value}\n"
    return "".join(lines)


def set_symops(text: str, *ops: str) -> str:
    """Replace the symmetry operation loop with ``ops`` (each written quoted)."""
    body = "".join(f"  '{op}'\n" for op in ops)
    return replace_once(text, "  'x, y, z'\n", body)


def declare_group_only(text: str, symbol: str, number: str) -> str:
    """Drop the symmetry operation loop and declare the space group by ``symbol`` and ``number`` instead."""
    text = replace_once(text, "loop_\n  _symmetry_equiv_pos_as_xyz\n  'x, y, z'\n", "")
    text = set_tag(text, "_symmetry_space_group_name_H-M", symbol)
    return set_tag(text, "_symmetry_int_tables_number", number)


def edit_atom(text: str, index: int, column: int, value: str) -> str:
    """Set column ``column`` (0: label, 1: occupancy, 2-4: x, y, z, 7: type symbol) of atom row ``index``."""
    line = _atom_lines(text)[index]
    fields = line.split()
    fields[column] = value
    return replace_once(text, line + "\n", "  " + "  ".join(fields) + "\n")


def keep_atoms(text: str, n: int) -> str:
    """Only the first ``n`` atom rows."""
    rows = _atom_lines(text)
    head = text.split(rows[0] + "\n")[0]
    return head + "".join(r + "\n" for r in rows[:n])


def scale_cell(text: str, factor: float) -> str:
    """Every cell length times ``factor`` (fractional coordinates unchanged)."""
    for axis in "abc":
        text = set_tag(text, f"_cell_length_{axis}", f"{11.6269 * factor:.6g}")
    return text


def random_bytes(seed: int, n: int, *, low: int = 0, high: int = 255) -> bytes:
    """Seeded garbage."""
    rng = random.Random(seed)
    return bytes(rng.randint(low, high) for _ in range(n))


def _variants() -> dict[str, Callable[[str], bytes | str]]:
    rows = _atom_lines(source())
    mid_loop = source().split(rows[20])[0] + rows[20][:14]

    def truncated_mid_number(t: str) -> str:
        return t.split(rows[30])[0] + rows[30][: rows[30].index("0.65") + 3]

    def cut_after(marker: str) -> Callable[[str], str]:
        return lambda t: t[: t.index(marker) + len(marker)]

    return {
        # truncated files
        "truncated_mid_loop.cif": lambda t: mid_loop,
        "truncated_mid_number.cif": truncated_mid_number,
        "truncated_in_cell.cif": cut_after("_cell_length_b       11.6"),
        "truncated_in_loop_header.cif": cut_after("  _atom_site_fract_x"),
        "truncated_after_loop_keyword.cif": lambda t: t[: t.rindex("loop_") + len("loop_\n")],
        "truncated_first_line.cif": lambda t: t[:7],
        "truncated_incomplete_last_row.cif": lambda t: keep_atoms(t, 3) + "  Zn9      1.0000 0.12500\n",
        # not text, or not UTF-8/ASCII text
        "binary_garbage.bin.cif": lambda t: random_bytes(1, 3000),
        "binary_high_bytes.cif": lambda t: random_bytes(2, 3000, low=0x80),
        "binary_after_data_line.cif": lambda t: b"data_x\n" + random_bytes(3, 2000, low=1),
        "gzip_compressed.cif": lambda t: gzip.compress(t.encode(), mtime=0),
        "nul_byte_late.cif": lambda t: (t[:2000] + "\x00" + t[2000:]).encode() + b"\x00" * 3000,
        "utf16_le_bom.cif": lambda t: t.encode("utf-16"),
        "utf16_be_bom.cif": lambda t: b"\xfe\xff" + t.encode("utf-16-be"),
        "utf16_le_no_bom.cif": lambda t: t.encode("utf-16-le"),
        "utf16_be_no_bom.cif": lambda t: t.encode("utf-16-be"),
        "utf32_bom.cif": lambda t: t.encode("utf-32"),
        "latin1_accents_in_names.cif": lambda t: (
            set_tag(t.replace("data_image0", "data_Zéolithe_çà"), "_cell_length_c", "0.0")
            .replace("Zn1 ", "Zné").replace("  Zn\n", "  Zñ\n", 1)).encode("latin-1"),
        "latin1_accented_element.cif": lambda t: edit_atom(t, 0, 7, "Zé").replace("Zn1 ", "Zé1").encode("latin-1"),
        "utf8_snowman_element.cif": lambda t: edit_atom(edit_atom(t, 0, 7, "☃"), 0, 0, "☃1").encode(),
        # bad coordinates
        "nan_coordinate.cif": lambda t: edit_atom(t, 5, 2, "nan"),
        "inf_coordinate.cif": lambda t: edit_atom(t, 5, 3, "inf"),
        "minus_inf_coordinate.cif": lambda t: edit_atom(t, 5, 4, "-inf"),
        "huge_coordinate_1e308.cif": lambda t: edit_atom(t, 5, 2, "1e308"),
        "overflowing_coordinate_1e309.cif": lambda t: edit_atom(t, 5, 2, "1e309"),
        "text_coordinate.cif": lambda t: edit_atom(t, 5, 2, "abc"),
        "unknown_coordinate.cif": lambda t: edit_atom(t, 5, 2, "?"),
        "cartesian_only.cif": lambda t: t.replace("_atom_site_fract_", "_atom_site_Cartn_"),
        "nan_cartesian_only.cif": lambda t: t.replace("_atom_site_fract_", "_atom_site_Cartn_")
        .replace("0.84790", "nan"),
        # bad cell lengths
        "zero_cell_length.cif": lambda t: set_tag(t, "_cell_length_a", "0"),
        "negative_cell_length.cif": lambda t: set_tag(t, "_cell_length_b", "-11.6269"),
        "nan_cell_length.cif": lambda t: set_tag(t, "_cell_length_c", "nan"),
        "inf_cell_length.cif": lambda t: set_tag(t, "_cell_length_a", "inf"),
        "huge_cell_length_1e308.cif": lambda t: set_tag(t, "_cell_length_a", "1e308"),
        "tiny_cell_length_1e-300.cif": lambda t: set_tag(t, "_cell_length_a", "1e-300"),
        "text_cell_length.cif": lambda t: set_tag(t, "_cell_length_a", "eleven"),
        "unknown_cell_length.cif": lambda t: set_tag(t, "_cell_length_a", "?"),
        "missing_cell_length_c.cif": lambda t: replace_once(t, "_cell_length_c       11.6269\n", ""),
        "missing_cell_angle_gamma.cif": lambda t: replace_once(t, "_cell_angle_gamma    90\n", ""),
        "scaled_down_cell_too_many_images.cif": lambda t: scale_cell(t, 1.0 / 11.6269),
        # bad cell angles
        "cell_angle_0.cif": lambda t: set_tag(t, "_cell_angle_alpha", "0"),
        "cell_angle_180.cif": lambda t: set_tag(t, "_cell_angle_beta", "180"),
        "cell_angle_360.cif": lambda t: set_tag(t, "_cell_angle_gamma", "360"),
        "cell_angle_nan.cif": lambda t: set_tag(t, "_cell_angle_alpha", "nan"),
        "cell_angles_impossible.cif": lambda t: set_tag(set_tag(set_tag(t, "_cell_angle_alpha", "10"),
                                                                "_cell_angle_beta", "10"), "_cell_angle_gamma", "170"),
        # garbage symmetry operations
        "symop_two_components.cif": lambda t: set_symops(t, "x,y"),
        "symop_unknown_letter.cif": lambda t: set_symops(t, "q+1,z,y"),
        "symop_product_and_division_by_zero.cif": lambda t: set_symops(t, "x*y,z,1/0"),
        "symop_prose.cif": lambda t: set_symops(t, "rotate by ninety degrees"),
        "symop_identity_then_garbage.cif": lambda t: set_symops(t, "x, y, z", "x,y"),
        "space_group_unknown_symbol_no_symops.cif": lambda t: declare_group_only(t, "'Q 9 9'", "?"),
        "space_group_number_231_no_symops.cif": lambda t: declare_group_only(t, "?", "231"),
        "symop_unterminated_quote.cif": lambda t: replace_once(t, "  'x, y, z'\n", "  'x, y, z\n"),
        # inconsistent loops and tags
        "loop_declares_million_atoms.cif": lambda t: replace_once(
            keep_atoms(t, 2), "_symmetry_int_tables_number       1\n",
            "_symmetry_int_tables_number       1\n_cell_formula_units_Z             1\n"
            "_chemical_formula_sum             'Zn500000 Cu500000'\n"),
        "two_structures_in_one_file.cif": lambda t: t + "\n" + t.replace("data_image0", "data_image1"),
        "duplicated_data_block_name.cif": lambda t: t + "\n" + scale_cell(t, 1.5),
        "duplicated_atom_loop.cif": lambda t: t + "\n" + ATOM_HEADER + "".join(r + "\n" for r in rows[:4]),
        "duplicated_tag_cell_length.cif": lambda t: replace_once(t, "_cell_angle_alpha", "_cell_length_a 5.0\n"
                                                                                           "_cell_angle_alpha"),
        "duplicated_tag_in_loop_header.cif": lambda t: replace_once(t, "  _atom_site_fract_z\n",
                                                                    "  _atom_site_fract_z\n  _atom_site_fract_x\n"),
        "missing_fract_coordinates.cif": lambda t: t.replace("  _atom_site_fract_x\n  _atom_site_fract_y\n"
                                                             "  _atom_site_fract_z\n", "  _atom_site_x\n"
                                                             "  _atom_site_y\n  _atom_site_z\n"),
        "missing_fract_z.cif": lambda t: replace_once(t, "  _atom_site_fract_z\n", "  _atom_site_other_z\n"),
        "loop_without_values.cif": lambda t: t.split(rows[0])[0],
        "loop_keyword_without_tags.cif": lambda t: t.replace("loop_\n  _symmetry_equiv_pos_as_xyz\n  'x, y, z'\n",
                                                             "loop_\n"),
        # bad occupancies and elements
        "occupancy_above_one.cif": lambda t: edit_atom(t, 4, 1, "1.7"),
        "occupancy_negative.cif": lambda t: edit_atom(t, 4, 1, "-0.5"),
        "occupancy_nan.cif": lambda t: edit_atom(t, 4, 1, "nan"),
        "occupancy_zero_everywhere.cif": lambda t: "\n".join(
            line.replace(" 1.0000 ", " 0.0000 ") for line in t.splitlines()) + "\n",
        "empty_element.cif": lambda t: edit_atom(edit_atom(t, 3, 7, "''"), 3, 0, "''"),
        "unknown_element_symbol_Xx.cif": lambda t: edit_atom(edit_atom(t, 3, 7, "Xx"), 3, 0, "Xx4"),
        "numeric_element.cif": lambda t: edit_atom(edit_atom(t, 3, 7, "12"), 3, 0, "12"),
        # next to nothing
        "zero_bytes.cif": lambda t: b"",
        "only_whitespace.cif": lambda t: " \t\n\n   \r\n\t  \n",
        "only_comments.cif": lambda t: "# a CIF\n# with nothing but comments\n",
        "data_block_with_nothing.cif": lambda t: "data_nothing\n",
        "data_block_name_only_underscore.cif": lambda t: "data_\n",
        "cell_only.cif": lambda t: t.split("_symmetry_space_group_name_H-M")[0],
        # one huge line (still far below the upload limit)
        "huge_single_line_number.cif": lambda t: set_tag(t, "_cell_length_a", "1" * 30_000),
        "huge_single_line_garbage.cif": lambda t: "data_x\n" + "x" * 30_000,
        "huge_single_line_whole_file.cif": lambda t: " ".join(t.split()) + " " + "Zn 0 0 0 " * 3000,
    }


def build() -> dict[str, bytes]:
    """Every generated file's name and bytes."""
    text = source()
    out = {}
    for name, make in _variants().items():
        data = make(text)
        out[name] = data.encode() if isinstance(data, str) else data
    return out


def main(argv: list[str] | None = None) -> int:
    """Write (or ``--check``) the corpus."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = parser.parse_args(argv)
    files = build()
    if args.check:
        stale = [n for n, data in files.items() if not (HERE / n).is_file() or (HERE / n).read_bytes() != data]
        for name in stale:
            print(f"differs: {name}", file=sys.stderr)
        return 1 if stale else 0
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(files)} files to {HERE} ({len(files) + len(HAND_MADE)} in the corpus)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
