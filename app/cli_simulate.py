"""``retnet simulate``: CH4 GCMC labels with RASPA2 (DESIGN.md §6), appended to a resumable labels CSV.

Each simulation runs in its own RASPA2 child process (see :mod:`models.gcmc`);
``--jobs N`` keeps N of them running at once. Rows are appended and flushed as
each simulation finishes (the file reopened by name each time, see :class:`RowAppender`), so an
interrupted run continues with ``--resume``.

Without ``--pressures`` a run writes one row per structure at the reference 5.8 bar
(columns :data:`models.gcmc.LABEL_COLUMNS`). With ``--pressures 1,5.8,35,65`` it
writes one row per structure *and pressure* (:data:`models.gcmc.ISOTHERM_COLUMNS`);
``--reuse-labels`` copies 5.8 bar points from existing reference-protocol labels.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def register_simulate(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``simulate`` subcommand to an argparse ``subparsers`` object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="CH4 uptake labels by RASPA2 GCMC (reference protocol)",
        description="Run RASPA2 GCMC (298 K, 5.8 bar, GenericMOFs/TraPPE, 12 Å cut-off; DESIGN.md §6) on CIFs "
        "and append one row per structure to a labels CSV with the columns of the reference table; with "
        "--pressures, an isotherm: one row per structure and pressure. "
        "Needs the optional dependency: pip install '.[gcmc]'.",
    )
    parser.add_argument("cifs", nargs="*", type=Path, metavar="CIF", help="CIF files (name = file stem)")
    parser.add_argument(
        "--coremof", nargs="+", default=[], metavar="NAME", help="CoRE MOF 2019-ASR entry names (e.g. HEGCEB_clean)"
    )
    parser.add_argument(
        "--coremof-list",
        type=Path,
        metavar="FILE",
        help="file of CoRE MOF entry names: one per line ('#' comments), or a CSV with a 'name' column",
    )
    parser.add_argument("--out", type=Path, required=True, help="labels CSV to write (appended with --resume)")
    parser.add_argument("--cycles", type=int, default=700, help="production cycles (default: 700)")
    parser.add_argument("--init-cycles", type=int, default=300, help="initialisation cycles (default: 300)")
    parser.add_argument("--jobs", type=int, default=1, help="simulations run in parallel (default: 1)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="append to --out, skipping names (with --pressures: name and pressure pairs) already in it",
    )
    parser.add_argument(
        "--max-supercell-atoms",
        type=int,
        default=3000,
        help="skip structures whose simulation box holds more atoms (default: 3000)",
    )
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="per-simulation time limit")
    parser.add_argument(
        "--pressures",
        type=_pressure_list,
        default=None,
        metavar="BAR[,BAR...]",
        help="isotherm: simulate every structure at each of these pressures (bar, e.g. 1,5.8,35,65) and write one "
        "row per structure and pressure (name,pressure_bar,ch4_uptake_mol_kg,ch4_uptake_err,seconds,"
        "supercell_atoms,status); default: one row per structure at 5.8 bar, reference columns",
    )
    parser.add_argument(
        "--reuse-labels",
        nargs="+",
        type=Path,
        default=[],
        metavar="CSV",
        help="with --pressures and the reference cycles: copy the 5.8 bar point of a structure from the first "
        "'ok' row for it in these 5.8 bar labels CSVs (status ok_reused) instead of simulating it again",
    )
    parser.set_defaults(func=run_simulate)
    return parser


def _pressure_list(text: str) -> list[float]:
    """``--pressures``: comma-separated positive pressures in bar → sorted, distinct floats."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of pressures in bar: {text!r}") from exc
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"pressures must be positive numbers of bar, got {text!r}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"a pressure is given twice in {text!r}")
    return sorted(values)


def _say(message: str) -> None:
    """Progress and messages go to stderr (looked up at call time: it may be redirected); stdout stays free."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _read_name_list(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = [c.strip() for c in lines[0].split(",")] if lines else []
    if "name" in header and len(header) > 1:
        with path.open(newline="", encoding="utf-8") as handle:
            return [row["name"].strip() for row in csv.DictReader(handle) if row.get("name", "").strip()]
    names = []
    for line in lines:
        entry = line.split("#", 1)[0].strip()
        if entry and entry != "name":
            names.append(entry)
    return names


def _collect_inputs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(name, path) for every requested structure, in order, without duplicates; raises KeyError/OSError."""
    items: list[tuple[str, Path]] = []
    for path in args.cifs:
        if not path.is_file():
            raise OSError(f"no such CIF file: {path}")
        items.append((path.stem, path))
    names = list(args.coremof)
    if args.coremof_list is not None:
        names += _read_name_list(args.coremof_list)
    if names:
        from models.datasets import coremof_cif

        unknown = []
        for raw in names:
            name = raw.removesuffix(".cif")
            try:
                items.append((name, coremof_cif(name)))
            except KeyError:
                unknown.append(name)
        if unknown:
            shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            raise KeyError(f"not in CoRE MOF 2019-ASR: {shown}")
    seen: set[str] = set()
    unique = []
    for name, path in items:
        if name not in seen:
            seen.add(name)
            unique.append((name, path))
    return unique


def _pressure_key(pressure_bar: float) -> float:
    """What makes two pressures the same point on resume (``5.8`` and ``5.80`` are; bar)."""
    return round(float(pressure_bar), 9)


def _done_keys(out: Path, columns: list[str]) -> set[Any]:
    """Rows already in a labels CSV: names, or (name, pressure key) for an isotherm file.

    Drops a torn last line left by a killed run.
    """
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        out.write_bytes(data[: data.rfind(b"\n") + 1])
    with out.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames and list(reader.fieldnames) != columns:
            raise ValueError(f"{out} has columns {reader.fieldnames}, expected {columns}")
        rows = [row for row in reader if row.get("name")]
    if "pressure_bar" not in columns:
        return {row["name"] for row in rows}
    try:
        return {(row["name"], _pressure_key(float(row["pressure_bar"]))) for row in rows}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{out} has a row whose pressure_bar is not a number: {exc}") from exc


#: Columns a ``--reuse-labels`` file needs (the 5.8 bar labels CSVs have them all).
_REUSE_COLUMNS = ("name", "ch4_uptake_mol_kg", "ch4_uptake_err", "seconds", "supercell_atoms", "status")


def _reusable_labels(paths: list[Path]) -> dict[str, dict[str, str]]:
    """name → the first ``ok`` row for it in these 5.8 bar labels CSVs (earlier files win).

    Raises OSError (unreadable file) or ValueError (not a labels CSV, or a non-numeric ``ok`` row).
    """
    found: dict[str, dict[str, str]] = {}
    for path in paths:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in _REUSE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path} is not a 5.8 bar labels CSV: no column(s) {', '.join(missing)}")
            for row in reader:
                if row.get("status") == "ok" and row.get("name") and row["name"] not in found:
                    float(row["ch4_uptake_mol_kg"]), float(row["ch4_uptake_err"])  # a torn row raises here
                    found[row["name"]] = row
    return found


def _reused_result(row: dict[str, str]) -> Any:
    """A 5.8 bar label row as an ``ok_reused`` result (its uptake, error, seconds and supercell atoms)."""
    from models.gcmc import PRESSURE_PA, GcmcResult

    atoms = row.get("supercell_atoms", "").strip()
    return GcmcResult(
        name=row["name"],
        status="ok_reused",
        uptake_mol_kg=float(row["ch4_uptake_mol_kg"]),
        uptake_err=float(row["ch4_uptake_err"]),
        seconds=float(row["seconds"] or 0.0),
        supercell_atoms=int(float(atoms)) if atoms else None,
        pressure_pa=PRESSURE_PA,
    )


def _split_reused(
    todo: list[_Task], reusable: dict[str, dict[str, str]], max_supercell_atoms: int
) -> tuple[list[_Task], list[Any]]:
    """(tasks still to simulate, ``ok_reused`` results): the 5.8 bar tasks of structures with a reusable label.

    A label whose supercell is above ``max_supercell_atoms`` is not reused (the structure would be skipped).
    """
    from models.gcmc import REFERENCE_PRESSURE_BAR

    reference = _pressure_key(REFERENCE_PRESSURE_BAR)
    simulate, reused = [], []
    for task in todo:
        row = reusable.get(task.name)
        if (
            row is not None
            and task.pressure_bar is not None
            and _pressure_key(task.pressure_bar) == reference
            and int(float(row.get("supercell_atoms") or 0)) <= max_supercell_atoms
        ):
            reused.append(_reused_result(row))
        else:
            simulate.append(task)
    return simulate, reused


class RowAppender:
    """Appends CSV rows to a labels file, opening it by name for every write (rows are seconds to minutes apart).

    A run of hours holds no open handle: when the file is replaced meanwhile (a ``git stash`` or ``checkout`` of
    the committed labels file, an editor's save), later rows go to the file at that path, not to an unlinked
    inode where they would be lost. A new or empty file gets the header first.
    """

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path, self.columns = path, list(columns)

    def append(self, rows: Sequence[dict[str, str]]) -> None:
        """Write ``rows`` (and the header, when the file is new or empty) and close the file."""
        new_file = not self.path.exists() or self.path.stat().st_size == 0
        if not rows and not new_file:
            return
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, lineterminator="\n")
            if new_file:
                writer.writeheader()
            writer.writerows(rows)


@dataclass(frozen=True)
class _Task:
    """One simulation: a structure at one pressure (``pressure_bar`` None: the reference file format)."""

    name: str
    path: Path
    pressure_bar: float | None = None

    @property
    def key(self) -> Any:
        return self.name if self.pressure_bar is None else (self.name, _pressure_key(self.pressure_bar))

    @property
    def label(self) -> str:
        from models.gcmc import format_pressure_bar

        return self.name if self.pressure_bar is None else f"{self.name} @ {format_pressure_bar(self.pressure_bar)} bar"


def _describe(result: Any) -> str:
    if result.status == "ok":
        a, b, c = result.unit_cells
        return (
            f"ok {result.uptake_mol_kg:.4f} ± {result.uptake_err:.4f} mol/kg "
            f"({a}x{b}x{c} cells, {result.supercell_atoms} atoms, {result.seconds:.1f} s)"
        )
    if result.status == "skipped_large":
        return f"skipped_large ({result.message})"
    return f"FAILED: {result.message}"


def run_simulate(args: argparse.Namespace) -> int:
    """Simulate every requested (structure[, pressure]) not yet in ``--out`` and append its row.

    Returns 0 when all is done, 1 if any simulation failed, 2 on bad usage, 130 when interrupted.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from models import gcmc

    pressures: list[float] | None = args.pressures
    if args.jobs < 1 or args.cycles < 1 or args.init_cycles < 0:
        _say("error: need --jobs >= 1, --cycles >= 1 and --init-cycles >= 0")
        return 2
    if args.reuse_labels and pressures is None:
        _say("error: --reuse-labels needs --pressures (it fills the 5.8 bar point of an isotherm)")
        return 2
    if args.reuse_labels and (args.cycles, args.init_cycles) != (gcmc.DEFAULT_CYCLES, gcmc.DEFAULT_INIT_CYCLES):
        _say(
            f"error: --reuse-labels copies labels made with the reference {gcmc.DEFAULT_CYCLES} + "
            f"{gcmc.DEFAULT_INIT_CYCLES} cycles; drop it, or keep the default --cycles and --init-cycles"
        )
        return 2
    try:
        gcmc.raspa_paths()
    except gcmc.RaspaNotAvailableError as exc:
        _say(f"error: {exc}")
        return 2
    try:
        items = _collect_inputs(args)
        reusable = _reusable_labels(args.reuse_labels)
    except (KeyError, OSError, ValueError) as exc:
        _say(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}")
        return 2
    if not items:
        _say("error: nothing to simulate: give CIF files, --coremof NAME... or --coremof-list FILE")
        return 2

    columns = gcmc.LABEL_COLUMNS if pressures is None else gcmc.ISOTHERM_COLUMNS
    out: Path = args.out
    done: set[Any] = set()
    if out.exists() and out.stat().st_size > 0:
        if not args.resume:
            _say(f"error: {out} exists; pass --resume to continue it, or choose another --out")
            return 2
        try:
            done = _done_keys(out, columns)
        except ValueError as exc:
            _say(f"error: {exc}")
            return 2
    # Structure-major order: with --jobs 1 a partial run holds whole isotherms.
    levels: list[float | None] = list(pressures) if pressures is not None else [None]
    wanted = [_Task(name, path, level) for name, path in items for level in levels]
    todo = [task for task in wanted if task.key not in done]
    todo, reused = _split_reused(todo, reusable, args.max_supercell_atoms)
    what = "structure" if pressures is None else "simulation"
    where = "" if pressures is None else f" at {', '.join(gcmc.format_pressure_bar(p) for p in pressures)} bar"
    _say(
        f"simulate: {len(todo)} to run{where}, "
        + (f"{len(reused)} copied from 5.8 bar labels (ok_reused), " if args.reuse_labels else "")
        + f"{len(wanted) - len(todo) - len(reused)} already in {out}; "
        f"{args.cycles} + {args.init_cycles} init cycles, {args.jobs} job(s)"
    )
    if not todo and not reused:
        return 0

    out.parent.mkdir(parents=True, exist_ok=True)
    rows = RowAppender(out, columns)
    rows.append([result.as_isotherm_row() for result in reused])  # (and the header of a new file)
    counts = {"ok": 0, "skipped_large": 0, "failed": 0}
    start = time.monotonic()

    def row_of(result: Any) -> dict[str, str]:
        return result.as_row() if pressures is None else result.as_isotherm_row()

    executor = ThreadPoolExecutor(max_workers=args.jobs)
    try:
        futures = {
            executor.submit(
                gcmc.simulate_ch4,
                task.path,
                name=task.name,
                cycles=args.cycles,
                init_cycles=args.init_cycles,
                max_supercell_atoms=args.max_supercell_atoms,
                timeout_s=args.timeout,
                pressure_pa=gcmc.pressure_pa_from_bar(task.pressure_bar or gcmc.REFERENCE_PRESSURE_BAR),
            ): task
            for task in todo
        }
        for finished, future in enumerate(as_completed(futures), start=1):
            task = futures[future]
            try:
                result = future.result()
            except OSError as exc:
                result = gcmc.GcmcResult(
                    name=task.name,
                    status="failed",
                    message=f"cannot read the CIF: {exc}",
                    pressure_pa=gcmc.pressure_pa_from_bar(task.pressure_bar or gcmc.REFERENCE_PRESSURE_BAR),
                )
            rows.append([row_of(result)])
            counts[result.status] = counts.get(result.status, 0) + 1
            elapsed = time.monotonic() - start
            eta = elapsed / finished * (len(todo) - finished)
            _say(
                f"[{finished}/{len(todo)}] {task.label} {_describe(result)}  "
                f"(elapsed {elapsed:.0f} s, eta {eta:.0f} s)"
            )
    except KeyboardInterrupt:
        _say("interrupted: rows written so far are kept; rerun with --resume to continue")
        executor.shutdown(wait=False, cancel_futures=True)
        return 130
    executor.shutdown(wait=True)
    _say(
        f"done: {counts['ok']} ok, {counts['skipped_large']} skipped_large, {counts['failed']} failed "
        + (f"({what}s), {len(reused)} ok_reused " if pressures is not None else "")
        + f"in {time.monotonic() - start:.0f} s → {out}"
    )
    return 1 if counts["failed"] else 0
