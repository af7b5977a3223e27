"""CIFs that say the same crystal in another way parse to the same crystal, and declarations we cannot read
are refused instead of silently becoming P1.

The reference for each crystal is the file with an explicit symmetry-operation loop, written by hand from the
International Tables (not from spglib, which resolves the other forms).
"""

from __future__ import annotations

import warnings

import pytest

from models.errors import InvalidCIFError
from models.structure import Crystal, parse_cif

CELL = """data_{name}
_cell_length_a {a}
_cell_length_b {b}
_cell_length_c {c}
_cell_angle_alpha 90
_cell_angle_beta {beta}
_cell_angle_gamma 90
"""
ATOMS = """loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
{rows}"""

#: Rock salt (Fm-3m, a = 5.64 Å): two sites, eight atoms in the cell.
ROCK_SALT = {"a": 5.64, "b": 5.64, "c": 5.64, "beta": 90, "rows": "Na1 Na 0 0 0\nCl1 Cl 0.5 0.5 0.5\n"}
ROCK_SALT_OPS = ["x,y,z", "x,y+1/2,z+1/2", "x+1/2,y,z+1/2", "x+1/2,y+1/2,z"]  # the centring; (0,0,0) and
# (½,½,½) are fixed by every point operation of m-3m, so the translations alone expand them
#: A monoclinic P2_1/c crystal with atoms on general positions (unique axis b, cell choice 1).
P21C = {"a": 7.1, "b": 9.3, "c": 8.2, "beta": 104.5, "rows": "Zn1 Zn 0.11 0.23 0.31\nO1 O 0.37 0.08 0.19\n"}
P21C_OPS = ["x,y,z", "-x,y+1/2,-z+1/2", "-x,-y,-z", "x,-y+1/2,z+1/2"]


def _cif(cell: dict, symmetry: str, name: str = "x") -> str:
    return CELL.format(name=name, **cell) + symmetry + ATOMS.format(rows=cell["rows"])


def _loop(ops: list[str]) -> str:
    return "loop_\n_symmetry_equiv_pos_as_xyz\n" + "".join(f"'{op}'\n" for op in ops)


def _same(a: Crystal, b: Crystal) -> None:
    assert a.n_atoms == b.n_atoms
    assert a.sha256 == b.sha256


@pytest.mark.parametrize("symmetry", [
    "_symmetry_space_group_name_Hall '-F 4 2 3'\n",
    "_space_group_name_Hall '-F 4 2 3'\n",
    "_symmetry_space_group_name_H-M 'F 4/m -3 2/m'\n",
    "_space_group.name_H-M_alt 'F m -3 m'\n",
    "_space_group.IT_number 225\n",
    "_symmetry_space_group_name_H-M 'F m -3 m'\n",
], ids=["hall", "hall-ddlm-alias", "full-hm", "ddlm-hm", "ddlm-number", "short-hm"])
def test_every_way_of_naming_fm3m_gives_the_rock_salt_cell(symmetry: str) -> None:
    reference = parse_cif(_cif(ROCK_SALT, _loop(ROCK_SALT_OPS)), name="ref")
    assert reference.n_atoms == 8
    _same(parse_cif(_cif(ROCK_SALT, symmetry)), reference)


@pytest.mark.parametrize("symmetry", [
    "_symmetry_space_group_name_Hall '-P 2ybc'\n",
    "_symmetry_space_group_name_Hall '-P_2ybc'\n",
    "_symmetry_space_group_name_H-M 'P 1 21/c 1'\n",
    "_symmetry_space_group_name_H-M 'P 21/c'\n",
    "_symmetry_Int_Tables_number 14\n",
], ids=["hall", "hall-underscores", "long-hm", "short-hm", "number"])
def test_every_way_of_naming_p21c_gives_the_same_general_positions(symmetry: str) -> None:
    reference = parse_cif(_cif(P21C, _loop(P21C_OPS)), name="ref")
    assert reference.n_atoms == 8
    _same(parse_cif(_cif(P21C, symmetry)), reference)


#: R-3 on rhombohedral axes (a = b = c, α = β = γ): the 3-fold along [111] and the inversion.
RHOMBOHEDRAL = {"a": 6.2, "b": 6.2, "c": 6.2, "beta": 72.5, "rows": "Zn1 Zn 0.11 0.23 0.31\n"}
R3_RHOMBOHEDRAL_OPS = ["x,y,z", "z,x,y", "y,z,x", "-x,-y,-z", "-z,-x,-y", "-y,-z,-x"]


def _rhombohedral(symmetry: str) -> str:
    return _cif(RHOMBOHEDRAL, symmetry).replace("_cell_angle_alpha 90", "_cell_angle_alpha 72.5").replace(
        "_cell_angle_gamma 90", "_cell_angle_gamma 72.5")


@pytest.mark.parametrize("symmetry", ["_symmetry_space_group_name_H-M 'R -3'\n",
                                      "_symmetry_space_group_name_H-M 'R -3 :R'\n",
                                      "_symmetry_space_group_name_Hall '-P 3*'\n"])
def test_a_rhombohedral_group_on_rhombohedral_axes_keeps_those_axes(symmetry: str) -> None:
    """pymatgen reads 'R -3' on hexagonal axes, as the Tables' default: on this cell that was 18 atoms, not 6."""
    reference = parse_cif(_rhombohedral(_loop(R3_RHOMBOHEDRAL_OPS)), name="ref")
    assert reference.n_atoms == 6
    _same(parse_cif(_rhombohedral(symmetry)), reference)


def test_a_rhombohedral_group_on_hexagonal_axes_keeps_the_centring() -> None:
    hexagonal = {"a": 9.1, "b": 9.1, "c": 8.2, "beta": 90, "rows": "Zn1 Zn 0.11 0.23 0.31\n"}
    text = _cif(hexagonal, "_symmetry_space_group_name_H-M 'R -3'\n").replace("_cell_angle_gamma 90",
                                                                             "_cell_angle_gamma 120")
    assert parse_cif(text).n_atoms == 18


def test_a_hall_symbol_ending_in_a_double_quote_is_read_whole() -> None:
    """P 3_1 2 1 is '-P 31 2"' minus the inversion: the '"' (an axis) must not be taken for a quote."""
    trigonal = {"a": 9.1, "b": 9.1, "c": 8.2, "beta": 90, "rows": "Zn1 Zn 0.11 0.23 0.31\n"}
    text = _cif(trigonal, "_symmetry_space_group_name_Hall 'P 31 2\"'\n").replace("_cell_angle_gamma 90",
                                                                                 "_cell_angle_gamma 120")
    assert parse_cif(text).n_atoms == 6


def test_a_symop_loop_wins_over_a_declared_symbol() -> None:
    """pymatgen's rule, kept: the operations written out are the crystal; the symbol is a label."""
    crystal = parse_cif(_cif(ROCK_SALT, "_symmetry_space_group_name_Hall '-F 4 2 3'\n" + _loop(["x,y,z"])))
    assert crystal.n_atoms == 2


@pytest.mark.parametrize("symmetry", ["", "_symmetry_space_group_name_H-M 'P 1'\n", "_space_group_IT_number 1\n",
                                      "_symmetry_space_group_name_Hall ' P 1'\n",
                                      "_symmetry_space_group_name_H-M ?\n"])
def test_no_declaration_or_p1_is_p1(symmetry: str) -> None:
    assert parse_cif(_cif(ROCK_SALT, symmetry)).n_atoms == 2


@pytest.mark.parametrize(("symmetry", "tag", "value"), [
    ("_symmetry_space_group_name_H-M 'Q 9 9'\n", "_symmetry_space_group_name_H-M", "Q 9 9"),
    ("_space_group_IT_number 231\n", "_space_group_IT_number", "231"),
    ("_symmetry_space_group_name_Hall '-Z 9'\n", "_symmetry_space_group_name_Hall", "-Z 9"),
])
def test_an_unreadable_declared_group_is_refused_naming_the_tag(symmetry: str, tag: str, value: str) -> None:
    with pytest.raises(InvalidCIFError) as error:
        parse_cif(_cif(ROCK_SALT, symmetry), name="odd")
    assert str(error.value).startswith("odd: ")
    assert tag in str(error.value) and repr(value) in str(error.value)


def test_an_unreadable_symbol_beside_a_readable_number_uses_the_number() -> None:
    symmetry = "_symmetry_space_group_name_H-M 'F m -3 m (no. 225)'\n_space_group_IT_number 225\n"
    assert parse_cif(_cif(ROCK_SALT, symmetry)).n_atoms == 8


def test_ddlm_dotted_tags_read_as_their_ddl1_aliases() -> None:
    plain = _cif(P21C, _loop(P21C_OPS))
    dotted = (plain.replace("_cell_", "_cell.").replace("_atom_site_", "_atom_site.")
              .replace("_symmetry_equiv_pos_as_xyz", "_space_group_symop.operation_xyz"))
    assert "_atom_site.fract_x" in dotted
    _same(parse_cif(dotted), parse_cif(plain))


def test_a_utf8_byte_order_mark_is_not_part_of_the_file() -> None:
    text = _cif(P21C, _loop(P21C_OPS))
    reference = parse_cif(text)
    _same(parse_cif(b"\xef\xbb\xbf" + text.encode()), reference)
    _same(parse_cif("\ufeff" + text), reference)
    _same(parse_cif(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()), reference)


def test_cartesian_only_sites_are_refused_with_what_to_write_instead() -> None:
    text = _cif(P21C, _loop(P21C_OPS)).replace("_atom_site_fract_", "_atom_site_Cartn_")
    with pytest.raises(InvalidCIFError, match="Cartesian coordinates only.*_atom_site_fract_x"):
        parse_cif(text, name="cart")


def test_operations_with_spaces_but_no_quotes_are_joined_back() -> None:
    reference = parse_cif(_cif(P21C, _loop(P21C_OPS)), name="ref")
    unquoted = "loop_\n_symmetry_equiv_pos_as_xyz\n" + "".join(
        op.replace(",", ", ") + "\n" for op in P21C_OPS)
    assert "-x, y+1/2, -z+1/2\n" in unquoted
    _same(parse_cif(_cif(P21C, unquoted)), reference)
    _same(parse_cif(_cif(P21C, unquoted), fast=False), reference)
    spaced = "loop_\n_symmetry_equiv_pos_as_xyz\nx , y , z\n-x , -y , -z\n"
    assert parse_cif(_cif(P21C, spaced)).n_atoms == 4


def test_an_unquoted_identity_takes_the_fast_reader_to_the_same_crystal() -> None:
    text = _cif(P21C, "loop_\n_symmetry_equiv_pos_as_xyz\nx, y, z\n")
    _same(parse_cif(text), parse_cif(text, fast=False))
    assert parse_cif(text).n_atoms == 2


def test_unquoted_tokens_that_do_not_make_operations_are_still_refused() -> None:
    broken = "loop_\n_symmetry_equiv_pos_as_xyz\nx, y, z\n-x, -y\n"
    with pytest.raises(InvalidCIFError, match="invalid symmetry operation"):
        parse_cif(_cif(P21C, broken), name="broken")


def test_sites_without_labels_take_their_type_symbols() -> None:
    labelled = _cif(P21C, _loop(P21C_OPS))
    unlabelled = labelled.replace("_atom_site_label\n", "").replace("Zn1 Zn", "Zn").replace("O1 O", "O")
    assert "_atom_site_label" not in unlabelled
    _same(parse_cif(unlabelled), parse_cif(labelled))
    identity_only = _cif(P21C, _loop(["x,y,z"]))
    unlabelled_p1 = identity_only.replace("_atom_site_label\n", "").replace("Zn1 Zn", "Zn").replace("O1 O", "O")
    _same(parse_cif(unlabelled_p1), parse_cif(unlabelled_p1, fast=False))


def test_tags_in_any_letter_case_read_as_written_in_lower_case() -> None:
    """CIF tags are case-insensitive; pymatgen's lookups are not."""
    text = _cif(P21C, "_symmetry_space_group_name_H-M 'P 21/c'\n")
    shouted = "".join(line.replace(line.split()[0], line.split()[0].upper(), 1) if line.startswith("_") else line
                      for line in text.splitlines(keepends=True))
    assert "'P 21/c'" in shouted
    assert "_CELL_LENGTH_A 7.1" in shouted and "_ATOM_SITE_FRACT_X" in shouted
    _same(parse_cif(shouted), parse_cif(text))
    _same(parse_cif(shouted, fast=False), parse_cif(text))


MAGNETIC = """data_mag
_space_group_magn.number_BNS 2.4
_space_group_magn.name_BNS "P-1"
_cell_length_a 5.0
_cell_length_b 6.0
_cell_length_c 7.0
_cell_angle_alpha 90
_cell_angle_beta 95
_cell_angle_gamma 90
loop_
_space_group_symop_magn_operation.id
_space_group_symop_magn_operation.xyz
1 x,y,z,+1
2 -x,-y,-z,+1
loop_
_space_group_symop_magn_centering.id
_space_group_symop_magn_centering.xyz
1 x,y,z,+1
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Fe1 Fe 0.1 0.2 0.3
O1 O 0.3 0.1 0.2
"""


def test_magnetic_cif_keeps_its_dotted_operation_tags() -> None:
    """pymatgen reads magCIF's dotted names as written: they are not rewritten, so the inversion still applies."""
    assert parse_cif(MAGNETIC).n_atoms == 4


def test_typographic_minus_signs_and_spaces_keep_their_meaning() -> None:
    """pymatgen's tokenizer deletes non-ASCII characters: ``−0.37`` (U+2212, pasted from a paper) became 0.37."""
    plain = _cif(P21C, _loop(P21C_OPS)).replace("O1 O 0.37", "O1 O -0.37")
    reference = parse_cif(plain)
    for minus in ("\u2212", "\u2013", "\uff0d"):
        _same(parse_cif(plain.replace("O1 O -0.37", f"O1 O {minus}0.37")), reference)
    _same(parse_cif(plain.replace("O1 O -0.37 0.08", "O1 O -0.37\u00a00.08")), reference)
    _same(parse_cif(plain.replace("O1 O -0.37", "O1 O -0.37\u200b")), reference)
    positive = parse_cif(plain.replace("O1 O -0.37", "O1 O 0.37"))
    assert positive.sha256 != reference.sha256


def test_a_file_of_several_structures_is_refused_naming_them() -> None:
    """pymatgen parses every block and we would have predicted the first alone: the others would be lost."""
    two = _cif(P21C, _loop(P21C_OPS), name="first") + _cif(ROCK_SALT, "", name="second")
    with pytest.raises(InvalidCIFError, match=r"2 structures \(data_first, data_second\)"):
        parse_cif(two, name="two")


def test_a_block_without_atoms_beside_the_structure_is_fine() -> None:
    """CSD and journal files put the publication in a block of its own."""
    text = "data_global\n_journal_year 2020\n_publ_section_title 'a MOF'\n" + _cif(P21C, _loop(P21C_OPS))
    _same(parse_cif(text), parse_cif(_cif(P21C, _loop(P21C_OPS))))


def test_two_blocks_of_one_name_are_refused() -> None:
    """pymatgen keeps the last of two blocks named alike, silently."""
    text = _cif(P21C, _loop(P21C_OPS), name="same") + _cif(ROCK_SALT, "", name="same")
    with pytest.raises(InvalidCIFError, match="data block data_same appears twice"):
        parse_cif(text, name="dup")


def _cell_for(number: int, choice: str) -> tuple[float, ...]:
    """A cell of the crystal family of space group ``number`` in setting ``choice`` (a, b, c in Å; α, β, γ in °)."""
    if choice == "R":
        return (9.1, 9.1, 9.1, 70.0, 70.0, 70.0)
    if number <= 2:
        return (7.1, 8.3, 9.2, 81.0, 77.0, 68.0)
    if number <= 15:  # monoclinic: the unique axis is the first letter of the setting (b when none)
        axis = choice.lstrip("-")[:1] or "b"
        return (7.1, 8.3, 9.2, *(101.0 if axis == k else 90.0 for k in "abc"))
    if number <= 74:
        return (7.1, 8.3, 9.2, 90.0, 90.0, 90.0)
    if number <= 142:
        return (9.1, 9.1, 8.2, 90.0, 90.0, 90.0)
    if number <= 194:
        return (9.1, 9.1, 8.2, 90.0, 90.0, 120.0)
    return (9.1, 9.1, 9.1, 90.0, 90.0, 90.0)


def test_every_hall_setting_by_hall_or_full_symbol_alone_expands_a_general_position() -> None:
    """All 530 settings: a general position declared only by the Hall symbol, or only by the full Hermann–Mauguin
    symbol, expands to as many atoms as the setting has operations (spglib's table)."""
    import spglib

    wrong = []
    for hall in range(1, 531):
        with warnings.catch_warnings():  # spglib 2.x deprecation notice about its error handling
            warnings.simplefilter("ignore", DeprecationWarning)
            group = spglib.get_spacegroup_type(hall)
            n_ops = len(spglib.get_symmetry_from_database(hall)["rotations"])
        a, b, c, alpha, beta, gamma = _cell_for(group.number, group.choice)
        head = (f"data_g\n_cell_length_a {a}\n_cell_length_b {b}\n_cell_length_c {c}\n_cell_angle_alpha {alpha}\n"
                f"_cell_angle_beta {beta}\n_cell_angle_gamma {gamma}\n")
        for tag, symbol in (("_symmetry_space_group_name_Hall", group.hall_symbol),
                            ("_symmetry_space_group_name_H-M", group.international_full)):
            text = head + f"{tag} '{symbol}'\n" + ATOMS.format(rows="Zn1 Zn 0.1123 0.2317 0.3141\n")
            n_atoms = parse_cif(text, name="g").n_atoms
            if n_atoms != n_ops:
                wrong.append((hall, symbol, n_atoms, n_ops))
    assert not wrong
