"""``retnet design`` (here, on a model's shipped library) and ``retnet client design`` (a service's POST /design).

Both print the ranked candidates: rank, name, source, each target quantity's predicted value and σ, in_domain,
distance, within_tolerance and p_within (table or CSV on stdout).
"""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Any

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


def parse_target(pairs: list[str]) -> dict[str, float]:
    """``["uptake_65bar=12", "uptake_5.8bar=4"]`` → ``{"uptake_65bar": 12.0, "uptake_5.8bar": 4.0}``."""
    target: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            target[key.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--target {pair!r}: expected QUANTITY=VALUE, e.g. uptake_65bar=12"
                                             ) from None
    return target


def print_candidates(result: dict[str, Any], fmt: str) -> None:
    """The candidates of a design result on stdout, best first."""
    quantities = list(result.get("target") or {})
    columns = ["rank", "name", "source", *quantities, *[f"{q}_sigma" for q in quantities], "in_domain",
               "distance", "within_tolerance", "p_within"]
    rows = []
    for c in result.get("candidates") or []:
        row = {"rank": c["rank"], "name": c["name"], "source": c["source"], "in_domain": c.get("in_domain"),
               "distance": f"{c['distance']:.4g}", "within_tolerance": c["within_tolerance"],
               "p_within": "" if c.get("p_within") is None else f"{c['p_within']:.3f}"}
        for q in quantities:
            row[q] = f"{c['predicted'][q]:.4g}"
            row[f"{q}_sigma"] = "" if not c.get("uncertainty") else f"{c['uncertainty'][q]:.3g}"
        rows.append(row)
    if fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    print("  ".join("-" * widths[c] for c in columns))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in columns).rstrip())


def _summary(result: dict[str, Any]) -> str:
    return (f"{result['ranked']} structures ranked with {result['model']} ({result['units']}); "
            f"{result['within_tolerance']} of the top {len(result['candidates'])} within tolerance")


def _tolerance(args: argparse.Namespace, target: dict[str, float]) -> float | dict[str, float]:
    if not args.tolerance_for:
        return float(args.tolerance)
    per = parse_target(args.tolerance_for)
    return {k: per.get(k, float(args.tolerance)) for k in target}


def _cmd_design(args: argparse.Namespace) -> int:
    """Rank the shipped library of ``--model`` here (no service)."""
    from pathlib import Path

    from app.cli import _resolve_model
    from app.schemas import DesignRequest
    from app.services.design import library_candidates, quantity_keys, rank_pool
    from app.services.errors import ServiceError
    from app.services.outputs import Outputs
    from models.artifacts import load_model
    from models.design import LIBRARY_FILE, read_library

    try:
        target = parse_target(args.target)
    except argparse.ArgumentTypeError as exc:
        print(f"retnet: {exc}", file=sys.stderr)
        return EXIT_USAGE
    folder = Path(_resolve_model(args.model))
    card = load_model(folder, device="cpu").card
    outputs = Outputs.of(card.model_dump(mode="json"))
    unknown = [k for k in target if k not in outputs.sort_keys]
    if unknown:
        print(f"retnet: {card.ref} does not give {', '.join(unknown)}; it gives {', '.join(outputs.sort_keys)}",
              file=sys.stderr)
        return EXIT_USAGE
    if not (folder / LIBRARY_FILE).is_file():
        print(f"retnet: {card.ref} ships no {LIBRARY_FILE} (make one with scripts/design_library.py)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        request = DesignRequest(target=target, tolerance=_tolerance(args, target), units=args.units,
                                top_k=args.top, in_domain_only=args.in_domain_only, sources=["library"])
        pool = library_candidates(read_library(folder / LIBRARY_FILE), quantity_keys(outputs, target))
        if pool is None:
            raise ServiceError(f"the library of {card.ref} lacks a target quantity")
        result = rank_pool(pool, request, card.ref, {"service": 0, "library": len(pool.names)})
    except (ValueError, ServiceError) as exc:
        print(f"retnet: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print_candidates(result, args.format)
    print(_summary(result), file=sys.stderr)
    return EXIT_OK


def client_design(args: argparse.Namespace, client: Any) -> int:
    """``retnet client design``: POST /design, wait, print the candidates (exit 1 when the job failed)."""
    from retnet_client import JobFailedError

    try:
        target = parse_target(args.target)
    except argparse.ArgumentTypeError as exc:
        print(f"retnet client design: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = client.design(target, _tolerance(args, target), args.model, units=args.units, top_k=args.top,
                               in_domain_only=args.in_domain_only, timeout=args.timeout)
    except JobFailedError as exc:
        print(f"retnet client design: {exc.detail}", file=sys.stderr)
        return EXIT_FAILURES
    print_candidates(result, args.format)
    print(_summary(result) + f" (service: {result['sources']['service']}, library: {result['sources']['library']})",
          file=sys.stderr)
    return EXIT_OK


def design_options(p: argparse.ArgumentParser) -> None:
    """The options ``retnet design`` and ``retnet client design`` share."""
    p.add_argument("--target", action="append", required=True, metavar="QUANTITY=VALUE",
                   help="a target quantity in --units (repeat for a curve): value, or for an isotherm model "
                        "uptake_<p>bar (e.g. uptake_65bar=12) and deliverable_65_5.8bar")
    p.add_argument("--tolerance", type=float, required=True, metavar="T",
                   help="half-width of the acceptable band, same unit")
    p.add_argument("--tolerance-for", action="append", default=[], metavar="QUANTITY=T",
                   help="another tolerance for one quantity")
    p.add_argument("--model", default=None, help="model (default: the default model)")
    p.add_argument("--units", choices=["mol/kg", "cm3(STP)/cm3"], default="mol/kg")
    p.add_argument("--top", type=int, default=10, metavar="K", help="candidates to print (default: %(default)s)")
    p.add_argument("--in-domain-only", action="store_true", help="only structures inside the applicability domain")
    p.add_argument("--format", choices=["table", "csv"], default="table")


def register_design(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``retnet design`` to the ``retnet`` parser."""
    p = sub.add_parser("design", help="which CoRE MOF structures come closest to a target uptake or isotherm?",
                       description="Rank a model's shipped library of CoRE MOF 2019 predictions by distance to a "
                       "target (here, no service; `retnet client design` asks a service, which also ranks the "
                       "structures you predicted). Exit code 2 for a target the model does not give.")
    design_options(p)
    p.set_defaults(func=_cmd_design)


__all__ = ["client_design", "design_options", "parse_target", "print_candidates", "register_design"]
