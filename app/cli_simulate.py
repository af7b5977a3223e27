"""``retnet simulate``: CH4 GCMC labels with RASPA2 (DESIGN.md §6), appended to a resumable labels CSV.

Each structure runs in its own RASPA2 child process (see :mod:`models.gcmc`);
``--jobs N`` keeps N of them running at once. Rows are appended and flushed as
each structure finishes, so an interrupted run continues with ``--resume``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any


def register_simulate(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``simulate`` subcommand to an argparse ``subparsers`` object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="CH4 uptake labels by RASPA2 GCMC (reference protocol)",
        description="Run RASPA2 GCMC (298 K, 5.8 bar, GenericMOFs/TraPPE, 12 Å cut-off; DESIGN.md §6) on CIFs "
        "and append one row per structure to a labels CSV with the columns of the reference table. "
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
    parser.add_argument("--jobs", type=int, default=1, help="structures simulated in parallel (default: 1)")
    parser.add_argument("--resume", action="store_true", help="append to --out, skipping names already in it")
    parser.add_argument(
        "--max-supercell-atoms",
        type=int,
        default=3000,
        help="skip structures whose simulation box holds more atoms (default: 3000)",
    )
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="per-structure time limit")
    parser.set_defaults(func=run_simulate)
    return parser


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


def _done_names(out: Path, columns: list[str]) -> set[str]:
    """Names already in a labels CSV; drops a torn last line left by a killed run."""
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        out.write_bytes(data[: data.rfind(b"\n") + 1])
    with out.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames and list(reader.fieldnames) != columns:
            raise ValueError(f"{out} has columns {reader.fieldnames}, expected {columns}")
        return {row["name"] for row in reader if row.get("name")}


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
    """Simulate every requested structure not yet in ``--out`` and append its row; 1 if any failed, 2 on bad usage."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from models.gcmc import LABEL_COLUMNS, RaspaNotAvailableError, raspa_paths, simulate_ch4

    if args.jobs < 1 or args.cycles < 1 or args.init_cycles < 0:
        _say("error: need --jobs >= 1, --cycles >= 1 and --init-cycles >= 0")
        return 2
    try:
        raspa_paths()
    except RaspaNotAvailableError as exc:
        _say(f"error: {exc}")
        return 2
    try:
        items = _collect_inputs(args)
    except (KeyError, OSError) as exc:
        _say(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}")
        return 2
    if not items:
        _say("error: nothing to simulate: give CIF files, --coremof NAME... or --coremof-list FILE")
        return 2

    out: Path = args.out
    done: set[str] = set()
    if out.exists() and out.stat().st_size > 0:
        if not args.resume:
            _say(f"error: {out} exists; pass --resume to continue it, or choose another --out")
            return 2
        try:
            done = _done_names(out, LABEL_COLUMNS)
        except ValueError as exc:
            _say(f"error: {exc}")
            return 2
    todo = [(name, path) for name, path in items if name not in done]
    _say(
        f"simulate: {len(todo)} to run, {len(items) - len(todo)} already in {out}; "
        f"{args.cycles} + {args.init_cycles} init cycles, {args.jobs} job(s)"
    )
    if not todo:
        return 0

    out.parent.mkdir(parents=True, exist_ok=True)
    new_file = not out.exists() or out.stat().st_size == 0
    counts = {"ok": 0, "skipped_large": 0, "failed": 0}
    start = time.monotonic()
    with out.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        if new_file:
            writer.writeheader()
            handle.flush()
        executor = ThreadPoolExecutor(max_workers=args.jobs)
        try:
            futures = {
                executor.submit(
                    simulate_ch4,
                    path,
                    name=name,
                    cycles=args.cycles,
                    init_cycles=args.init_cycles,
                    max_supercell_atoms=args.max_supercell_atoms,
                    timeout_s=args.timeout,
                ): name
                for name, path in todo
            }
            for finished, future in enumerate(as_completed(futures), start=1):
                name = futures[future]
                try:
                    result = future.result()
                except OSError as exc:
                    from models.gcmc import GcmcResult

                    result = GcmcResult(name=name, status="failed", message=f"cannot read the CIF: {exc}")
                writer.writerow(result.as_row())
                handle.flush()
                counts[result.status] = counts.get(result.status, 0) + 1
                elapsed = time.monotonic() - start
                eta = elapsed / finished * (len(todo) - finished)
                _say(f"[{finished}/{len(todo)}] {name} {_describe(result)}  (elapsed {elapsed:.0f} s, eta {eta:.0f} s)")
        except KeyboardInterrupt:
            _say("interrupted: rows written so far are kept; rerun with --resume to continue")
            executor.shutdown(wait=False, cancel_futures=True)
            return 130
        executor.shutdown(wait=True)
    _say(
        f"done: {counts['ok']} ok, {counts['skipped_large']} skipped_large, {counts['failed']} failed "
        f"in {time.monotonic() - start:.0f} s → {out}"
    )
    return 1 if counts["failed"] else 0
