"""CH4 uptake labels by GCMC with RASPA2, with exactly the reference protocol (DESIGN.md §6).

Protocol: 298 K, 5.8 bar, force field GenericMOFs (UFF framework, TraPPE
united-atom CH4), 12 Å cut-off with shifted potentials, no charges, rigid
framework, unit cells repeated until every perpendicular width of the
simulation box is at least twice the cut-off, 300 initialisation + 700
production cycles with translation/reinsertion/swap moves. The label is
RASPA2's "Average loading absolute [mol/kg framework]" (value and error).
Structures whose supercell exceeds 3,000 atoms are skipped, not simulated.
An isotherm is the same protocol at several pressures (``pressure_pa``; one
simulation per pressure, rows with :data:`ISOTHERM_COLUMNS`).

RASPA2 (``pip install .[gcmc]``) is optional: everything here except
:func:`simulate_ch4` works without it.

How RASPA2 is run
-----------------
The ``RASPA2`` Python package is a thin ``ctypes`` wrapper: ``RASPA2.run_script``
starts a ``multiprocessing.Process`` per call, which loads ``libraspa2.so``
and calls its ``run(script, structure, raspa_dir, stream)`` entry point. The
package does that on purpose (RASPA leaks memory, keeps its state in C
globals, and calls ``exit()`` on bad input), but ``multiprocessing`` refuses
to start children from daemonic processes (Celery prefork workers,
``multiprocessing.Pool`` workers: "daemonic processes are not allowed to have
children").

Loading the library once per process and calling ``run`` repeatedly is not
safe for the same reasons (leaked and stale global state between runs, and a
RASPA ``exit()`` or segfault would kill the calling worker). So
:func:`simulate_ch4` keeps the one-process-per-simulation isolation but starts
that process with :mod:`subprocess` (a fresh ``python -c`` that only loads the
library with ``ctypes`` and calls ``run``), which is allowed from daemonic
processes, supports a timeout, and turns crashes into a ``"failed"`` result.
The ``RASPA2`` Python package is never imported: only its shared library and
data folder (force fields, molecules) are located.
"""

from __future__ import annotations

import importlib.util
import io
import math
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Production cycles of the reference protocol.
DEFAULT_CYCLES = 700
#: Initialisation cycles of the reference protocol.
DEFAULT_INIT_CYCLES = 300
#: Temperature, K.
TEMPERATURE_K = 298.0
#: Pressure, Pa (5.8 bar).
PRESSURE_PA = 580000.0
#: Van der Waals cut-off, Å (potentials shifted at the cut-off by GenericMOFs).
CUTOFF_ANGSTROM = 12.0
#: Structures whose simulation supercell holds more atoms than this are skipped.
MAX_SUPERCELL_ATOMS = 3000
#: Columns of a labels CSV, in order (same as ``models/data/ch4_coremof2019_raspa2.csv``).
LABEL_COLUMNS = [
    "name",
    "ch4_uptake_mol_kg",
    "ch4_uptake_err",
    "ch4_molecules_per_uc",
    "seconds",
    "supercell_atoms",
    "status",
]
#: Pressure of the reference labels, bar.
REFERENCE_PRESSURE_BAR = 5.8
#: Pressures of an isotherm label set, bar (1 bar; 5.8 and 65 bar: the DOE deliverable-capacity pair; 35 bar).
ISOTHERM_PRESSURES_BAR = (1.0, 5.8, 35.0, 65.0)
#: Columns of an isotherm labels CSV (one row per structure and pressure), in order.
ISOTHERM_COLUMNS = [
    "name",
    "pressure_bar",
    "ch4_uptake_mol_kg",
    "ch4_uptake_err",
    "seconds",
    "supercell_atoms",
    "status",
]
#: Statuses of a row that holds a label: simulated here (``ok``), or copied from a reference-protocol
#: 5.8 bar label of the same structure (``ok_reused``, isotherm files only; see docs/gcmc.md).
LABEL_STATUSES = ("ok", "ok_reused")

_WIDTH_TOLERANCE = 1e-6

_SCRIPT_TEMPLATE = """\
SimulationType MonteCarlo
NumberOfCycles {cycles}
NumberOfInitializationCycles {init_cycles}
PrintEvery 100000
Forcefield GenericMOFs
CutOffVDW {cutoff}
ChargeMethod None
UseChargesFromCIFFile no
Framework 0
FrameworkName streamed
InputFileType cif
UnitCells {ua} {ub} {uc}
HeliumVoidFraction 1.0
ExternalTemperature {temperature}
ExternalPressure {pressure}

Component 0 MoleculeName methane
            MoleculeDefinition TraPPE
            TranslationProbability 0.5
            ReinsertionProbability 0.5
            SwapProbability 1.0
            CreateNumberOfMolecules 0
"""

# Runs in a fresh interpreter: argv = [library, raspa_dir]; cwd holds input.txt and framework.cif.
_CHILD_CODE = """\
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.run.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_bool)
lib.run.restype = ctypes.c_void_p
with open("input.txt", "rb") as f:
    script = f.read()
with open("framework.cif", "rb") as f:
    cif = f.read()
ptr = lib.run(script, cif, sys.argv[2].encode(), True)
out = ctypes.cast(ptr, ctypes.c_char_p).value if ptr else b""
with open("output.txt.partial", "wb") as f:
    f.write(out or b"")
import os
os.replace("output.txt.partial", "output.txt")
"""


class RaspaNotAvailableError(RuntimeError):
    """RASPA2 is not installed (``pip install .[gcmc]``) or its shared library is missing."""


class RaspaOutputError(ValueError):
    """RASPA2's output lacks the expected result line (the simulation did not finish)."""


@dataclass(frozen=True)
class GcmcResult:
    """Outcome of one CH4 GCMC simulation.

    Attributes
    ----------
    name : str
        Structure name (CIF file stem or CoRE MOF entry).
    status : str
        ``"ok"``, ``"skipped_large"`` (supercell above the atom limit, not simulated)
        or ``"failed"`` (see :attr:`message`).
    uptake_mol_kg, uptake_err : float or None
        Absolute CH4 loading and RASPA2's ``+/-`` for it, mol/kg framework (``ok`` only). The error is the
        half-width of a 95 % confidence interval over 5 block averages (t₄ × s / √5), as in the reference table.
    molecules_per_uc : float or None
        Absolute loading in molecules per unit cell (``ok`` only).
    seconds : float
        Wall time of the RASPA2 run, s (0 when not simulated).
    supercell_atoms : int or None
        Framework atoms in the simulation box (unit-cell atoms × number of unit cells).
    unit_cells : tuple of int or None
        Unit cells along a, b, c.
    message : str
        Why the simulation failed (empty otherwise).
    pressure_pa : float
        The simulated pressure, Pa (default: the reference 5.8 bar).
    """

    name: str
    status: str
    uptake_mol_kg: float | None = None
    uptake_err: float | None = None
    molecules_per_uc: float | None = None
    seconds: float = 0.0
    supercell_atoms: int | None = None
    unit_cells: tuple[int, int, int] | None = None
    message: str = ""
    pressure_pa: float = PRESSURE_PA

    @property
    def pressure_bar(self) -> float:
        """The simulated pressure, bar."""
        return pressure_bar_from_pa(self.pressure_pa)

    def as_isotherm_row(self) -> dict[str, str]:
        """The result as an isotherm-CSV row (keys :data:`ISOTHERM_COLUMNS`; numbers formatted as in :meth:`as_row`)."""
        row = self.as_row()
        return {
            "name": self.name,
            "pressure_bar": format_pressure_bar(self.pressure_bar),
            **{column: row[column] for column in ISOTHERM_COLUMNS[2:]},
        }

    def as_row(self) -> dict[str, str]:
        """The result as a labels-CSV row (keys :data:`LABEL_COLUMNS`, values formatted as in the reference CSV)."""

        def num(value: float | None) -> str:
            return "" if value is None else f"{value:.10f}"

        return {
            "name": self.name,
            "ch4_uptake_mol_kg": num(self.uptake_mol_kg),
            "ch4_uptake_err": num(self.uptake_err),
            "ch4_molecules_per_uc": num(self.molecules_per_uc),
            "seconds": f"{self.seconds:.2f}",
            "supercell_atoms": "" if self.supercell_atoms is None else str(self.supercell_atoms),
            "status": self.status,
        }


def _format_float(value: float) -> str:
    return repr(float(value))


def pressure_pa_from_bar(pressure_bar: float) -> float:
    """Pressure in Pa from bar (1 bar = 10⁵ Pa), rounded to µPa so that 5.8 bar is exactly 580000.0 Pa.

    Examples
    --------
    >>> pressure_pa_from_bar(5.8), pressure_pa_from_bar(0.1)
    (580000.0, 10000.0)
    """
    return round(float(pressure_bar) * 1e5, 6)


def pressure_bar_from_pa(pressure_pa: float) -> float:
    """Pressure in bar from Pa, rounded to 10⁻¹¹ bar (µPa) so that 580000 Pa is exactly 5.8 bar."""
    return round(float(pressure_pa) / 1e5, 11)


def format_pressure_bar(pressure_bar: float) -> str:
    """The ``pressure_bar`` CSV field: the shortest text that reads back as the same float (``1``, ``5.8``).

    Examples
    --------
    >>> [format_pressure_bar(p) for p in (1.0, 5.8, 35.0, 0.125)]
    ['1', '5.8', '35', '0.125']
    """
    value = float(pressure_bar)
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def raspa_input(
    unit_cells: Sequence[int],
    *,
    cycles: int = DEFAULT_CYCLES,
    init_cycles: int = DEFAULT_INIT_CYCLES,
    temperature: float = TEMPERATURE_K,
    pressure_pa: float = PRESSURE_PA,
    cutoff: float = CUTOFF_ANGSTROM,
) -> str:
    """The RASPA2 input script of the reference protocol (DESIGN.md §6), the framework streamed as a CIF.

    Parameters
    ----------
    unit_cells : sequence of 3 int
        Unit cells along a, b, c (see :func:`unit_cells_for`).
    cycles, init_cycles : int
        Production and initialisation Monte Carlo cycles.
    temperature : float
        Temperature, K.
    pressure_pa : float
        Pressure, Pa.
    cutoff : float
        Van der Waals cut-off, Å.

    Returns
    -------
    str
        The script, one directive per line, ending with a newline.

    Examples
    --------
    >>> print(raspa_input((2, 2, 3)).splitlines()[11])
    UnitCells 2 2 3
    """
    cells = [int(n) for n in unit_cells]
    if len(cells) != 3 or min(cells) < 1:
        raise ValueError(f"unit_cells must be three positive integers, got {tuple(unit_cells)}")
    if cycles < 1 or init_cycles < 0:
        raise ValueError(f"need cycles >= 1 and init_cycles >= 0, got {cycles} and {init_cycles}")
    return _SCRIPT_TEMPLATE.format(
        cycles=int(cycles),
        init_cycles=int(init_cycles),
        cutoff=_format_float(cutoff),
        ua=cells[0],
        ub=cells[1],
        uc=cells[2],
        temperature=_format_float(temperature),
        pressure=_format_float(pressure_pa),
    )


def _widths(lattice: np.ndarray) -> np.ndarray:
    from models.structure import Crystal

    if not np.all(np.isfinite(lattice)) or abs(np.linalg.det(lattice)) < 1e-9:
        raise ValueError(f"degenerate cell: lattice {lattice.tolist()} has no volume")
    return Crystal(name="cell", lattice=lattice, frac_coords=np.zeros((0, 3)), species=()).widths


def unit_cells_for(crystal_or_lattice: object, cutoff: float = CUTOFF_ANGSTROM) -> tuple[int, int, int]:
    """Unit cells along a, b, c so that every perpendicular width of the box is at least twice the cut-off.

    Parameters
    ----------
    crystal_or_lattice : Crystal or array_like of shape (3, 3)
        A :class:`models.structure.Crystal` (anything with ``.widths``), or the
        lattice vectors as rows, in Å.
    cutoff : float
        Cut-off, Å.

    Returns
    -------
    tuple of 3 int
        ``n_i = ceil(2 * cutoff / w_i)`` with ``w_i`` the perpendicular widths of the cell.

    Examples
    --------
    >>> unit_cells_for([[10.0, 0, 0], [0, 24.0, 0], [0, 0, 30.0]])
    (3, 1, 1)
    """
    widths = getattr(crystal_or_lattice, "widths", None)
    if widths is None:
        lattice = np.asarray(crystal_or_lattice, dtype=np.float64)
        if lattice.shape != (3, 3):
            raise ValueError(f"expected a Crystal or a (3, 3) lattice, got shape {lattice.shape}")
        widths = _widths(lattice)
    widths = np.asarray(widths, dtype=np.float64)
    if not np.all(np.isfinite(widths)) or np.any(widths <= 0):
        raise ValueError(f"degenerate cell: perpendicular widths {widths.tolist()} Å")
    cells = [max(1, math.ceil(2.0 * cutoff / w - _WIDTH_TOLERANCE)) for w in widths]
    return cells[0], cells[1], cells[2]


def parse_loading(output: str, unit: str = "mol/kg framework") -> tuple[float, float]:
    """Read the absolute loading (value, error) from a RASPA2 output.

    Parameters
    ----------
    output : str
        The RASPA2 output text (what ``run`` returns in streaming mode).
    unit : str
        The bracketed unit of the line: ``"mol/kg framework"`` (the label) or
        ``"molecules/unit cell"``; the first component's line is used.

    Returns
    -------
    tuple of float
        (average, error) of "Average loading absolute [<unit>]".

    Raises
    ------
    RaspaOutputError
        The line is absent (the simulation did not finish) or not numeric.

    Examples
    --------
    >>> parse_loading("Average loading absolute [mol/kg framework]   1.2886534783 +/-   0.0300167629 [-]")
    (1.2886534783, 0.0300167629)
    """
    pattern = re.compile(r"Average loading absolute \[" + re.escape(unit) + r"\]\s+(\S+)\s+\+/-\s+(\S+)")
    match = pattern.search(output)
    if match is None:
        tail = " | ".join(line.strip() for line in output.strip().splitlines()[-3:] if line.strip())
        raise RaspaOutputError(
            f"RASPA2 output has no 'Average loading absolute [{unit}]' line "
            f"({len(output)} characters; ends with: {tail[-300:] or '<empty>'})"
        )
    try:
        value, error = float(match.group(1)), float(match.group(2))
    except ValueError as exc:
        raise RaspaOutputError(f"RASPA2 loading line is not numeric: {match.group(0)!r}") from exc
    if not (math.isfinite(value) and math.isfinite(error)):
        raise RaspaOutputError(f"RASPA2 loading is not finite: {match.group(0)!r}")
    return value, error


def raspa_paths() -> tuple[Path, Path]:
    """Locate RASPA2's shared library and data folder without importing the package.

    Returns
    -------
    (library, raspa_dir)
        ``libraspa2*.so`` and the package folder (holding ``share/raspa/forcefield`` …).

    Raises
    ------
    RaspaNotAvailableError
        RASPA2 is not installed or is incomplete.
    """
    spec = importlib.util.find_spec("RASPA2")
    if spec is None or not spec.submodule_search_locations:
        raise RaspaNotAvailableError("RASPA2 is not installed: pip install '.[gcmc]' (builds from source)")
    raspa_dir = Path(next(iter(spec.submodule_search_locations)))
    libraries = sorted((raspa_dir / "simulations" / "lib").glob("libraspa*"))
    if not libraries:
        raise RaspaNotAvailableError(f"RASPA2 at {raspa_dir} has no simulations/lib/libraspa2 shared library")
    if not (raspa_dir / "share" / "raspa" / "forcefield" / "GenericMOFs").is_dir():
        raise RaspaNotAvailableError(f"RASPA2 at {raspa_dir} lacks the GenericMOFs force field")
    return libraries[0], raspa_dir


def raspa_available() -> bool:
    """Whether :func:`simulate_ch4` can run (RASPA2 installed with its library and data)."""
    try:
        raspa_paths()
    except RaspaNotAvailableError:
        return False
    return True


def run_raspa(script: str, cif_text: str | bytes, *, timeout_s: float | None = None) -> str:
    """Run one RASPA2 simulation in a fresh child process and return its output text.

    Parameters
    ----------
    script : str
        RASPA2 input script with ``FrameworkName streamed``.
    cif_text : str or bytes
        The framework CIF.
    timeout_s : float, optional
        Kill the simulation after this many seconds.

    Raises
    ------
    RaspaNotAvailableError
        RASPA2 is not installed.
    RuntimeError
        The child crashed, exited without output, or timed out.
    """
    library, raspa_dir = raspa_paths()
    cif_bytes = cif_text.encode("utf-8") if isinstance(cif_text, str) else cif_text
    with tempfile.TemporaryDirectory(prefix="raspa-") as tmp:
        work = Path(tmp)
        (work / "input.txt").write_text(script, encoding="ascii")
        (work / "framework.cif").write_bytes(cif_bytes)
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD_CODE, str(library), str(raspa_dir)],
                cwd=work,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"RASPA2 timed out after {timeout_s:g} s") from exc
        output_file = work / "output.txt"
        if proc.returncode != 0 or not output_file.exists():
            chatter = (proc.stderr or b"").decode("utf-8", "replace") + (proc.stdout or b"").decode("utf-8", "replace")
            chatter = " | ".join(line.strip() for line in chatter.strip().splitlines()[-5:] if line.strip())
            how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
            raise RuntimeError(f"RASPA2 stopped with {how} and no output" + (f": {chatter[-500:]}" if chatter else ""))
        return output_file.read_text(encoding="utf-8", errors="replace")


def _read_cif(cif_path_or_text: str | Path | bytes, name: str | None) -> tuple[str, bytes]:
    if isinstance(cif_path_or_text, bytes):
        return name or "structure", cif_path_or_text
    if isinstance(cif_path_or_text, Path) or (
        "\n" not in cif_path_or_text and cif_path_or_text.lower().endswith(".cif")
    ):
        path = Path(cif_path_or_text)
        return name or path.stem, path.read_bytes()
    return name or "structure", cif_path_or_text.encode("utf-8")


def _cell_and_atoms(cif: bytes) -> tuple[np.ndarray, int]:
    """Lattice (Å, rows) and symmetry-expanded atom count as RASPA2 sees them.

    Deliberately not :func:`models.structure.parse_cif`: its validation (e.g.
    overlapping H atoms) rejects structures that RASPA2 simulates, and the
    reference labels include some.
    """
    from pymatgen.io.cif import CifParser

    text = cif.decode("utf-8", errors="replace")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = CifParser(io.StringIO(text)).parse_structures(primitive=False)
    if not structures:
        raise ValueError("the CIF holds no readable structure")
    structure = structures[0]
    return np.array(structure.lattice.matrix, dtype=np.float64), len(structure)


def simulate_ch4(
    cif_path_or_text: str | Path | bytes,
    *,
    name: str | None = None,
    cycles: int = DEFAULT_CYCLES,
    init_cycles: int = DEFAULT_INIT_CYCLES,
    max_supercell_atoms: int = MAX_SUPERCELL_ATOMS,
    timeout_s: float | None = None,
    pressure_pa: float = PRESSURE_PA,
) -> GcmcResult:
    """Absolute CH4 uptake of one framework at 298 K and 5.8 bar (or ``pressure_pa``) by GCMC (DESIGN.md §6).

    Parameters
    ----------
    cif_path_or_text : str, Path or bytes
        A ``.cif`` path, or the CIF contents. The CIF is streamed to RASPA2
        unchanged (RASPA2 applies its symmetry operations).
    name : str, optional
        Name in the result; defaults to the file stem (or ``"structure"``).
    cycles, init_cycles : int
        Production and initialisation cycles (reference: 700 and 300).
    max_supercell_atoms : int
        Larger simulation boxes are not simulated (``status="skipped_large"``).
    timeout_s : float, optional
        Give up on the simulation after this many seconds (``status="failed"``).
    pressure_pa : float
        External pressure, Pa (default 580000 = 5.8 bar, the reference; an isotherm runs one call per
        pressure, see :func:`pressure_pa_from_bar`). Everything else stays the reference protocol.

    Returns
    -------
    GcmcResult
        ``status`` is ``"ok"``, ``"skipped_large"`` or ``"failed"`` (with ``message``);
        a bad CIF or a RASPA2 crash is a ``"failed"`` result, not an exception.

    Raises
    ------
    RaspaNotAvailableError
        RASPA2 is not installed (only raised when a simulation is due: skips need no RASPA2).
    OSError
        The CIF path cannot be read.
    """
    label, cif = _read_cif(cif_path_or_text, name)
    try:
        lattice, n_atoms = _cell_and_atoms(cif)
        cells = unit_cells_for(lattice)
    except Exception as exc:  # pymatgen raises bare ValueError/KeyError/IndexError on bad CIFs
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return GcmcResult(
            name=label, status="failed", message=f"cannot read the CIF: {reason}", pressure_pa=pressure_pa
        )
    supercell_atoms = n_atoms * cells[0] * cells[1] * cells[2]
    if supercell_atoms > max_supercell_atoms:
        return GcmcResult(
            name=label,
            status="skipped_large",
            supercell_atoms=supercell_atoms,
            unit_cells=cells,
            message=f"{supercell_atoms} atoms in the {cells[0]}x{cells[1]}x{cells[2]} supercell "
            f"(limit {max_supercell_atoms})",
            pressure_pa=pressure_pa,
        )
    script = raspa_input(cells, cycles=cycles, init_cycles=init_cycles, pressure_pa=pressure_pa)
    start = time.perf_counter()
    try:
        output = run_raspa(script, cif, timeout_s=timeout_s)
        uptake, err = parse_loading(output)
        per_uc, _ = parse_loading(output, unit="molecules/unit cell")
    except (RuntimeError, RaspaOutputError) as exc:
        if isinstance(exc, RaspaNotAvailableError):
            raise
        return GcmcResult(
            name=label,
            status="failed",
            seconds=time.perf_counter() - start,
            supercell_atoms=supercell_atoms,
            unit_cells=cells,
            message=str(exc),
            pressure_pa=pressure_pa,
        )
    return GcmcResult(
        name=label,
        status="ok",
        uptake_mol_kg=uptake,
        uptake_err=err,
        molecules_per_uc=per_uc,
        seconds=time.perf_counter() - start,
        supercell_atoms=supercell_atoms,
        unit_cells=cells,
        pressure_pa=pressure_pa,
    )


__all__: Sequence[str] = [
    "CUTOFF_ANGSTROM",
    "DEFAULT_CYCLES",
    "DEFAULT_INIT_CYCLES",
    "ISOTHERM_COLUMNS",
    "ISOTHERM_PRESSURES_BAR",
    "LABEL_COLUMNS",
    "LABEL_STATUSES",
    "MAX_SUPERCELL_ATOMS",
    "PRESSURE_PA",
    "REFERENCE_PRESSURE_BAR",
    "TEMPERATURE_K",
    "GcmcResult",
    "RaspaNotAvailableError",
    "RaspaOutputError",
    "format_pressure_bar",
    "parse_loading",
    "pressure_bar_from_pa",
    "pressure_pa_from_bar",
    "raspa_available",
    "raspa_input",
    "raspa_paths",
    "run_raspa",
    "simulate_ch4",
    "unit_cells_for",
]
