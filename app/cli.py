"""The ``retnet`` command line: voxelize, train, predict, evaluate, serve, worker, db, sweep, purge (and
simulate).

A thin adapter over library functions (``models.pipeline``, ``models.training``,
``models.artifacts``, ``app.server``, ``worker.main``). Heavy modules (numpy,
torch, pymatgen) are imported inside the command functions, so ``retnet --help``
stays fast. Results go to stdout; progress bars and messages to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Exit codes.
EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class CommandError(Exception):
    """A user-facing failure of a whole command (printed as ``retnet: error: ...``, exit code 1)."""


# --- shared options ------------------------------------------------------------------------------


def _add_voxel_options(parser: argparse.ArgumentParser) -> None:
    from_defaults = {  # literal copies of models.params defaults, to keep --help import-free
        "grid_size": 25, "cutoff": 10.0, "probe_epsilon": 50.0, "probe_sigma": 2.5, "temperature": 298.0,
    }
    group = parser.add_argument_group("voxel parameters (DESIGN.md §3)")
    group.add_argument("--grid-size", type=int, default=from_defaults["grid_size"], metavar="N",
                       help="grid points per axis; the grid has N³ points (default: %(default)s)")
    group.add_argument("--cutoff", type=float, default=from_defaults["cutoff"], metavar="Å",
                       help="Lennard-Jones cut-off radius in Å (default: %(default)s)")
    group.add_argument("--probe-epsilon", type=float, default=from_defaults["probe_epsilon"], metavar="K",
                       help="probe ε in K (default: %(default)s)")
    group.add_argument("--probe-sigma", type=float, default=from_defaults["probe_sigma"], metavar="Å",
                       help="probe σ in Å (default: %(default)s)")
    group.add_argument("--temperature", type=float, default=from_defaults["temperature"], metavar="K",
                       help="temperature T in K of the Boltzmann factor exp(-V/T) (default: %(default)s)")
    group.add_argument("--energy", action="store_true",
                       help="write the raw energy V in K instead of the Boltzmann factor exp(-V/T)")
    group.add_argument("--cubic-box", type=float, default=None, metavar="Å",
                       help="grid a cube of side L Å centred at the origin (Cartesian grid, for very skewed "
                       "cells) instead of the minimum-image supercell (default: supercell)")


def _voxel_params(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from models.params import VoxelParams

    try:
        return VoxelParams(grid_size=args.grid_size, cutoff=args.cutoff, probe_epsilon=args.probe_epsilon,
                           probe_sigma=args.probe_sigma, temperature=args.temperature,
                           boltzmann=not args.energy, cubic_box=args.cubic_box)
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        raise CommandError(f"invalid voxel parameters: {problems}") from exc


def _failure_line(name: str, message: str) -> str:
    """``FAILED name: reason`` (structure errors already start with the name)."""
    return f"FAILED {message}" if message.startswith(f"{name}:") else f"FAILED {name}: {message}"


def _progress_bar(total: int, desc: str, unit: str = "cif") -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=None if total > 1 else True)


# --- voxelize ------------------------------------------------------------------------------------


def _cmd_voxelize(args: argparse.Namespace) -> int:
    import numpy as np

    from models.pipeline import cif_sources, describe_error, voxelize_one

    params = _voxel_params(args)
    sources = cif_sources(args.cifs)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    failures: dict[str, str] = {}
    written = 0
    with _progress_bar(len(sources), "voxelize") as bar:
        for source in sources:
            bar.set_postfix_str(source.name[:30], refresh=False)
            try:
                grid = voxelize_one(source, params, args.cache, threads=args.threads)
            except Exception as exc:
                failures[source.name] = describe_error(exc)
                bar.write(_failure_line(source.name, failures[source.name]), file=sys.stderr)
            else:
                np.save(out / f"{source.name}.npy", grid)
                written += 1
            bar.update(1)
    what = "energies (K)" if args.energy else "Boltzmann factors"
    _err(f"voxelized {written} of {len(sources)} CIF(s) into {out} ({params.grid_size}³ float32 {what}); "
         f"{len(failures)} failed")
    return EXIT_FAILURES if failures else EXIT_OK


# --- train ---------------------------------------------------------------------------------------


def _default_unit(column: str) -> str:
    lowered = column.lower()
    for suffix, unit in (("_mol_kg", "mol/kg"), ("_mmol_g", "mmol/g"), ("_cm3_g", "cm³/g"), ("_g_l", "g/L"),
                         ("_v_v", "v/v"), ("_kj_mol", "kJ/mol"), ("_k", "K")):
        if lowered.endswith(suffix):
            return unit
    return ""


def _default_property(column: str) -> str:
    if column.lower().startswith("ch4_uptake"):
        return "CH4 uptake, 298 K, 5.8 bar"
    return column


def _default_conditions(column: str) -> dict[str, Any]:
    """Gas, temperature (K) and pressure (bar) of a known label column (the project's CH4 protocol)."""
    if column.lower().startswith("ch4_uptake"):
        return {"gas": "CH4", "temperature_k": 298.0, "pressure_bar": 5.8}
    return {}


def _load_base_model(reference: str | None, device: str | None) -> Any:
    if reference is None:
        return None
    from models.artifacts import load_model, shipped_model_dir

    path = Path(reference)
    if not path.exists():
        try:
            path = shipped_model_dir(reference)
        except FileNotFoundError as exc:
            raise CommandError(f"no model folder or shipped model named {reference!r}") from exc
    return load_model(path, device=device)


def _training_progress(total: int) -> tuple[Any, Any]:
    from models.pipeline import ProgressCallback  # noqa: F401  (documentation of the callback type)

    bar = _progress_bar(total, "voxelize")

    def step(name: str, error: str | None) -> None:
        if error is not None:
            bar.write(_failure_line(name, error), file=sys.stderr)
        bar.update(1)

    return bar, step


def _cmd_train(args: argparse.Namespace) -> int:
    import tempfile

    import numpy as np
    from tqdm import tqdm

    from models.artifacts import ModelCard, Target, save_model, save_trees
    from models.datasets import read_labels
    from models.hybrid import TREE_CRYSTAL_BLOCKS
    from models.metrics import regression_metrics
    from models.params import VoxelParams
    from models.pipeline import load_training_set
    from models.plots import parity_plot
    from models.training import TrainConfig, predict_grids, train_retnet, train_val_split

    targets: list[str] = args.target
    if args.freeze and not args.base_model:
        raise CommandError(f"--freeze {args.freeze} keeps layers of a base model fixed: give --base-model too")
    if args.input_clip is not None and not args.base_model:
        raise CommandError(f"--input-clip {args.input_clip:g} replaces a base model's clip while fine-tuning: "
                           "give --base-model too (a model trained from scratch clips at 100)")
    if args.trees and len(targets) != 1:
        raise CommandError(f"--trees blends the network with trees fitted to one target; got {len(targets)}")
    units = args.unit or [_default_unit(t) for t in targets]
    properties = args.property or [_default_property(t) for t in targets]
    if len(units) != len(targets) or len(properties) != len(targets):
        raise CommandError("give --unit and --property once per --target (or not at all)")
    params = VoxelParams()
    n_labels = len(read_labels(args.labels, targets))
    bar, step = _training_progress(n_labels)
    with bar:
        data = load_training_set(args.data, args.labels, targets, params, args.cache, progress=step,
                                 threads=args.threads, crystal_blocks=TREE_CRYSTAL_BLOCKS if args.trees else ())
    if data.failures:
        _err(f"{len(data.failures)} labelled structure(s) left out: " + "; ".join(
            f"{k}: {v}" for k, v in list(data.failures.items())[:10]) + (" ..." if len(data.failures) > 10 else ""))
    n = len(data.names)
    unsplittable = CommandError(f"{n} usable structure(s) cannot be split with --val-fraction {args.val_fraction} "
                                "(need at least 2 for training and 2 for validation)")
    try:
        train_idx, val_idx = train_val_split(n, args.val_fraction, args.seed)
    except ValueError as exc:
        raise unsplittable from exc
    n_val = len(val_idx)
    if args.val_fraction > 0 and (n_val < 2 or len(train_idx) < 2):
        raise unsplittable
    _err(f"training on {len(train_idx)} structure(s), validating on {len(val_idx)}")

    config = TrainConfig(epochs=args.epochs, batch_size=min(args.batch_size, max(2, len(train_idx))),
                         learning_rate=args.lr, augment=not args.no_augment, translate=args.translate,
                         patience=args.patience,
                         seed=args.seed, device=args.device, freeze=args.freeze, threads=args.threads,
                         fine_tune_clip=args.input_clip)
    if args.patience is not None and n_val == 0:
        raise CommandError("--patience needs a validation split (--val-fraction > 0)")
    base = _load_base_model(args.base_model, args.device)
    epochs = tqdm(total=args.epochs, desc="train", unit="epoch", file=sys.stderr, dynamic_ncols=True)

    def on_epoch(event: dict[str, Any]) -> None:
        shown = {"loss": f"{event['train_loss']:.4g}"}
        if event.get("val_r2") is not None:
            shown["val_R2"] = f"{event['val_r2']:.3f}"
        epochs.set_postfix(shown, refresh=False)
        epochs.update(1)

    spec = described = train_d = None
    base_spec = getattr(getattr(base, "card", None), "descriptor_spec", None)
    if not args.descriptors and base_spec is not None:  # fine-tuning a descriptor model keeps its inputs
        args.descriptors = list(base_spec.names)
    if args.descriptors:
        from models.descriptors import training_descriptors

        spec, described = training_descriptors(args.descriptors, data.grids, data.densities, train_idx, base_spec)
        train_d = described[train_idx]
    val = (data.grids[val_idx], data.targets[val_idx], None if described is None else described[val_idx]) \
        if n_val else None
    train_x, train_y = data.grids[train_idx], data.targets[train_idx]
    if args.vibration_copies:
        train_x, train_y = _with_vibration(args, data.names, train_idx, train_x, train_y, params)
        if spec is not None:  # the copies' own descriptors (their original's density, their own histogram)
            from models.descriptors import with_copy_descriptors

            train_d = with_copy_descriptors(spec, train_d, train_x[len(train_idx):],
                                            None if data.densities is None else data.densities[train_idx],
                                            args.vibration_copies)
    with epochs:
        result = train_retnet(train_x, train_y, config, val=val, base_model=base, progress=on_epoch,
                              descriptors=train_d)
    result.descriptors = spec

    target_models = [Target(name=t, unit=u, property=p, **(_default_conditions(t) if p == _default_property(t) else {}))
                     for t, u, p in zip(targets, units, properties, strict=True)]
    metrics: dict[str, Any] = {}
    network_val = None if not n_val else predict_grids(
        result.model, result.standardizer, data.grids[val_idx], descriptors=None if described is None else
        described[val_idx])
    hybrid = selection = None
    if args.trees:
        from models.hybrid import fit_hybrid, tree_features

        rows = tree_features(data.grids, data.densities, crystal_blocks=data.crystal_blocks)
        hybrid, selection = fit_hybrid(rows, data.targets, train_idx, val_idx,
                                       np.zeros(0) if network_val is None else network_val[:, 0])
    with tempfile.TemporaryDirectory(prefix="retnet-train-") as tmp:
        extra: dict[str, Path] = {}
        if network_val is not None:
            pred = network_val if hybrid is None else hybrid.blend(network_val, rows[val_idx])
            truth = data.targets[val_idx]
            computed = regression_metrics(truth, pred, n_boot=args.bootstrap, seed=args.seed, names=targets)
            metrics = _jsonable_metrics(computed)
            if hybrid is not None:  # the network alone beside the blend (whose weight this split chose)
                metrics["network"] = _jsonable_metrics(regression_metrics(truth, network_val, n_boot=args.bootstrap,
                                                                          seed=args.seed, names=targets))
            plot = parity_plot(truth[:, 0], pred[:, 0], Path(tmp) / "parity.png",
                               title=f"{properties[0]}: {args.name}:{args.version} (validation)", unit=units[0],
                               metrics=computed if len(targets) == 1 else computed[targets[0]])  # type: ignore[index]
            extra["parity.png"] = plot
        card = ModelCard(
            name=args.name, version=args.version, targets=target_models, voxel_params=params,
            training_data={"source": str(args.data), "labels": str(args.labels), "size": n,
                           "n_train": int(len(train_idx)), "n_val": int(n_val), "split_seed": args.seed,
                           "labels_sha256": data.labels_sha256, "left_out": len(data.failures),
                           "metrics_on": ("validation split" + (", which also chose the trees' weight "
                                                                 "(optimistic)" if hybrid is not None else "")
                                          if n_val else "none (no validation split)"),
                           "base_model": getattr(base, "ref", None),
                           "vibration_copies": args.vibration_copies,
                           "vibration_amplitude": args.vibration_amplitude if args.vibration_copies else None,
                           "input_clip": args.input_clip, "trees": args.trees},
            metrics=metrics, preliminary=n < 100,
            description=args.description or f"RetNet trained with `retnet train` on {n} structures",
        )
        folder = save_model(args.out, result, card, extra_files=extra, overwrite=args.overwrite)
        if hybrid is not None:
            card = save_trees(folder, hybrid, fitted_on=f"the training split ({len(train_idx)} structures)",
                              weight_selection=str(selection))
    summary = f"saved {card.ref} to {folder} (best epoch {result.best_epoch} of {result.epochs_run})"
    if metrics:
        first = metrics[targets[0]] if len(targets) > 1 else metrics
        summary += f"; validation R² {first['r2']['value']:.3f}, MAE {first['mae']['value']:.3g} {units[0]}"
    _err(summary)
    return EXIT_FAILURES if data.failures and args.strict else EXIT_OK


def _with_vibration(args: argparse.Namespace, names: list[str], train_idx: Any, train_x: Any, train_y: Any,
                    params: Any) -> tuple[Any, Any]:
    """The training grids and labels plus ``--vibration-copies`` thermally jittered copies of each structure."""
    import numpy as np

    from models.pipeline import cif_sources
    from models.structure import parse_cif
    from models.vibration import DEFAULT_AMPLITUDE, vibrated_copies, with_vibrated
    from models.voxels import compute_voxels

    if args.vibration_amplitude is None:
        args.vibration_amplitude = DEFAULT_AMPLITUDE
    sources = {s.name: s for s in cif_sources(args.data)}
    copies = []
    for i in train_idx:
        crystal = parse_cif(sources[names[i]].read(), names[i])
        copies.append([compute_voxels(c, params, threads=args.threads)
                       for c in vibrated_copies(crystal, args.vibration_copies, args.vibration_amplitude, args.seed)])
    _err(f"vibration augmentation: {args.vibration_copies} jittered copies of each training structure "
         f"(RMS {args.vibration_amplitude} Å per axis)")
    return with_vibrated(train_x, train_y, np.asarray(copies, dtype=np.float32))


def _jsonable_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        out[key] = _jsonable_metrics(value) if isinstance(value, dict) else value.model_dump()
    return out


# --- predict -------------------------------------------------------------------------------------


def _resolve_model(reference: str | None) -> Path:
    from models.artifacts import shipped_model_dir

    if reference is None:
        try:
            return shipped_model_dir()
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from exc
    path = Path(reference)
    if path.exists():
        return path
    try:
        return shipped_model_dir(reference.split(":", 1)[0])
    except FileNotFoundError as exc:
        raise CommandError(f"no model folder or shipped model named {reference!r}") from exc


def _cmd_predict(args: argparse.Namespace) -> int:
    import csv

    import numpy as np

    from app.services.outputs import Outputs
    from models.artifacts import load_model
    from models.descriptors import compute_crystal_blocks, stack_crystal_blocks
    from models.pipeline import cif_sources, describe_error
    from models.structure import parse_cif
    from models.units import CM3_STP_PER_CM3, MOL_PER_KG, crystal_density_g_cm3, mol_per_kg_to_cm3_stp_per_cm3
    from models.voxels import compute_voxels

    model = load_model(_resolve_model(args.model), device=args.device)
    if args.units == CM3_STP_PER_CM3 and any(t.unit != MOL_PER_KG for t in model.card.targets):
        raise CommandError(f"--units {CM3_STP_PER_CM3} needs a model in {MOL_PER_KG}; {model.ref} predicts "
                           f"{model.unit}")
    params = model.card.voxel_params
    sources = cif_sources(args.cifs)
    rows: list[dict[str, Any]] = []
    grids, owners, blocks = [], [], []
    with _progress_bar(len(sources), "voxelize") as bar:
        for source in sources:
            try:
                crystal = parse_cif(source.read(), source.name)
                density = crystal_density_g_cm3(crystal)
                grid = compute_voxels(crystal, params, device="cpu", threads=args.threads)
                # the numbers of the crystal itself that the model's trees read (none for most models)
                own_blocks = compute_crystal_blocks(model.crystal_blocks, [crystal], threads=args.threads)
                grids.append(grid)
                blocks.append(own_blocks)
                owners.append((len(rows), crystal.sha256))
                rows.append({"name": source.name, "sha256": crystal.sha256, "error": "", "density": density})
            except Exception as exc:
                rows.append({"name": source.name, "sha256": "", "error": describe_error(exc)})
            bar.update(1)
    densities = [rows[i]["density"] for i, _ in owners]
    crystal_blocks = stack_crystal_blocks(model.crystal_blocks, blocks)
    detailed = (model.predict_detailed(np.stack(grids), densities_g_cm3=densities, crystal_blocks=crystal_blocks)
                if grids else None)
    outputs = Outputs.of(model.card.model_dump(mode="json"))
    curve = outputs.pressures is not None
    # a curve model: one row per structure, its value (the primary output) and every point; otherwise a row per target
    targets = [outputs.primary] if curve else list(range(model.n_outputs))
    table: list[dict[str, Any]] = []
    by_row = {i: k for k, (i, _) in enumerate(owners)}
    for i, row in enumerate(rows):
        k = by_row.get(i)
        factor, units = 1.0, None
        if args.units == CM3_STP_PER_CM3 and row.get("density"):
            factor, units = float(mol_per_kg_to_cm3_stp_per_cm3(1.0, row["density"])), CM3_STP_PER_CM3
        for t in targets:
            target = model.card.targets[t]
            value = sigma = in_domain = None
            if k is not None and detailed is not None:
                value = detailed.values[k][t] * factor
                sigma = None if detailed.sigma is None else detailed.sigma[k][t] * factor
                in_domain = None if detailed.in_domain is None else bool(detailed.in_domain[k])
            entry = {"name": row["name"], "value": "" if value is None else f"{value:.6g}",
                     "uncertainty": "" if sigma is None else f"{sigma:.3g}",
                     "in_domain": "" if in_domain is None else in_domain,
                     "unit": units or target.unit, "property": target.property, "model": model.ref,
                     "sha256": row["sha256"], "error": row["error"]}
            if curve:
                shown = {} if k is None or detailed is None else outputs.present(
                    [float(v) for v in detailed.values[k]],
                    None if detailed.sigma is None else [float(v) for v in detailed.sigma[k]], factor)
                points = [p.value for p in shown.get("values") or []]
                if shown.get("deliverable_capacity") is not None:
                    points.append(shown["deliverable_capacity"])
                entry.update({c: f"{v:.6g}" for c, v in zip(outputs.csv_columns, points, strict=False)})
                entry.update({c: "" for c in outputs.csv_columns if c not in entry})
            table.append(entry)
    extra = outputs.csv_columns if curve else []
    columns = ["name", "value", "uncertainty", *extra, "in_domain", "unit", "property", "model", "sha256", "error"]
    if args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
    else:
        _print_table(table, ["name", "value", "uncertainty", *extra, "in_domain", "unit",
                             *([] if curve else ["property"]), "error"])
    failed = sum(1 for r in rows if r["error"])
    _err(f"predicted {len(rows) - failed} of {len(rows)} structure(s) with {model.ref}; {failed} failed")
    return EXIT_FAILURES if failed else EXIT_OK


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    print("  ".join("-" * widths[c] for c in columns))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in columns).rstrip())


# --- evaluate ------------------------------------------------------------------------------------


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from models.artifacts import load_model
    from models.metrics import regression_metrics
    from models.pipeline import load_training_set
    from models.plots import parity_plot

    model = load_model(_resolve_model(args.model), device=args.device)
    targets = args.target or [t.name for t in model.card.targets]
    if len(targets) != model.n_outputs:
        raise CommandError(f"model {model.ref} has {model.n_outputs} output(s) but {len(targets)} --target given")
    from models.datasets import read_labels

    bar, step = _training_progress(len(read_labels(args.labels, targets)))
    with bar:
        data = load_training_set(args.data, args.labels, targets, model.voxel_params, args.cache, progress=step,
                                 threads=args.threads, crystal_blocks=model.crystal_blocks)
    if data.failures:
        _err(f"{len(data.failures)} labelled structure(s) left out: " + "; ".join(
            f"{k}: {v}" for k, v in list(data.failures.items())[:10]))
    if len(data.names) < 2:
        raise CommandError("need at least 2 labelled structures to evaluate")
    pred = model.predict(data.grids, densities_g_cm3=data.densities, crystal_blocks=data.crystal_blocks)
    metrics = regression_metrics(data.targets, pred, n_boot=args.bootstrap, seed=args.seed, names=targets)
    print(f"model {model.ref} on {len(data.names)} structure(s) from {args.data}")
    labels = {"r2": "R²", "mae": "MAE", "rmse": "RMSE", "spearman": "Spearman ρ"}
    for i, target in enumerate(model.card.targets):
        per = metrics if model.n_outputs == 1 else metrics[targets[i]]  # type: ignore[index]
        print(f"{target.property} [{target.unit}] (column {targets[i]}):")
        for key, label in labels.items():
            m = per[key]  # type: ignore[index]
            unit = f" {target.unit}" if key in ("mae", "rmse") and target.unit else ""
            print(f"  {label:<11} {m.value:8.4f}{unit}   95% CI [{m.ci_low:.4f}, {m.ci_high:.4f}]")
    if args.plot:
        first = metrics if model.n_outputs == 1 else metrics[targets[0]]  # type: ignore[index]
        path = parity_plot(data.targets[:, 0], pred[:, 0], args.plot, title=f"{model.card.targets[0].property}: "
                           f"{model.ref}", unit=model.card.targets[0].unit, metrics=first)
        _err(f"wrote {path}")
    return EXIT_FAILURES if data.failures and args.strict else EXIT_OK


# --- serve / worker ------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    from app.core.cpu import short_openmp_spin

    short_openmp_spin()  # before anything imports torch: embedded mode runs forward passes beside the voxel tasks
    from app.server import serve

    serve(args.host, args.port, args.data_dir)
    return EXIT_OK


def _cmd_worker(args: argparse.Namespace) -> int:
    from worker.main import run_worker

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    known = {"voxels", "inference", "training"}
    unknown = sorted(set(queues) - known)
    if unknown or not queues:
        raise CommandError(f"unknown queue(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(sorted(known))}")
    result = run_worker(queues, args.concurrency)
    return int(result) if isinstance(result, int) else EXIT_OK


def _cmd_db(args: argparse.Namespace) -> int:
    from app.core.config import get_settings
    from app.db.migrate import current_revision, upgrade

    url = get_settings().db_url
    safe_url = url.split("@")[-1] if "@" in url else url
    if args.db_command == "upgrade":
        upgrade(url, args.revision)
        _err(f"database {safe_url} upgraded to {current_revision(url)}")
    else:
        print(current_revision(url) or "(no schema)")
    return EXIT_OK


def _cmd_sweep(args: argparse.Namespace) -> int:
    from app.core.config import get_settings
    from app.db.migrate import check_migrated
    from app.services.sweeper import sweep

    settings = get_settings()
    check_migrated(settings.db_url)
    older_than_s = args.older_than * 60 if args.older_than is not None else settings.sweep_after_s
    report = sweep(settings, older_than_s=older_than_s)
    _err(f"re-enqueued {len(report.items)} item(s) and {len(report.training_jobs)} training job(s) "
         f"queued for over {older_than_s / 60:g} min")
    return EXIT_OK


def _cmd_purge(args: argparse.Namespace) -> int:
    from app.core.config import get_settings
    from app.db.migrate import check_migrated
    from app.services.retention import purge
    from app.storage import cached_store

    settings = get_settings()
    check_migrated(settings.db_url)
    store = cached_store(settings.store_uri, settings.s3.endpoint_url, settings.s3.region)
    report = purge(settings, store, older_than_days=args.older_than, dry_run=args.dry_run)
    if args.dry_run or args.verbose:
        for key in report.uploads + report.grids:
            print(key)
    _err(report.summary())
    return EXIT_OK


def _positive_days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not days > 0 or days == float("inf"):
        raise argparse.ArgumentTypeError(f"the age must be a positive number of days, not {text}")
    return days


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


# --- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``retnet`` (no heavy imports)."""
    parser = argparse.ArgumentParser(
        prog="retnet",
        description="RetNet Service: predict gas adsorption in MOFs from CIF files via Lennard-Jones energy "
        "voxels and a 3D CNN. Run 'retnet COMMAND --help' for the options of a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("voxelize", help="CIFs → energy-voxel grids (.npy)",
                       description="Compute the energy voxels of CIF files and write one <name>.npy per CIF "
                       "(float32, shape (N, N, N)). Failures are reported with their reason and skipped; the exit "
                       "code is 1 if any failed.")
    p.add_argument("cifs", nargs="+", type=Path, metavar="CIF", help="CIF files (name = file stem)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if missing)")
    _add_voxel_options(p)
    p.add_argument("--cache", type=Path, default=None, metavar="DIR", help="grid cache folder (default: none)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: all cores)")
    p.set_defaults(func=_cmd_voxelize)

    p = sub.add_parser("train", help="train a RetNet on labelled CIFs",
                       description="Voxelize labelled CIFs (thesis parameters, 25³), train a RetNet (MSE, Adam, "
                       "StepLR; DESIGN.md §4) and save the model folder with its card, validation metrics "
                       "(R², MAE, RMSE, Spearman ρ with 95%% bootstrap CIs) and a parity plot.")
    p.add_argument("--data", type=Path, required=True, metavar="DIR_OR_ZIP",
                   help="folder or .zip of CIFs (name = file stem)")
    p.add_argument("--labels", type=Path, required=True, metavar="CSV",
                   help="labels CSV with a 'name' column and the target column(s); rows whose 'status' is not "
                   "'ok' are ignored")
    p.add_argument("--target", action="append", required=True, metavar="COLUMN",
                   help="label column to learn (repeat for several outputs, e.g. an isotherm)")
    p.add_argument("--unit", action="append", default=None, metavar="UNIT",
                   help="unit of each target (default: from the column suffix, e.g. _mol_kg → mol/kg)")
    p.add_argument("--property", action="append", default=None, metavar="TEXT",
                   help="description of each target with its conditions (e.g. 'CH4 uptake, 298 K, 5.8 bar')")
    p.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR", help="model folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model in --out")
    p.add_argument("--epochs", type=int, default=50, help="training epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="samples per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--no-augment", action="store_true", help="no random grid symmetries during training")
    p.add_argument("--vibration-copies", type=int, default=0, metavar="K",
                   help="vibration augmentation: K thermally jittered, re-voxelized copies of each training "
                        "structure (default: %(default)s = off)")
    p.add_argument("--vibration-amplitude", type=float, default=None, metavar="Å",
                   help="RMS displacement per Cartesian axis of the jitter (default: models.vibration."
                        "DEFAULT_AMPLITUDE, 0.12 Å: thermal motion of MOF framework atoms at 298 K)")
    p.add_argument("--translate", action="store_true",
                   help="also shift each sample by a random periodic translation (exact symmetry; default: off)")
    p.add_argument("--descriptors", nargs="+", default=[], choices=["log_density", "energy_histogram"],
                   help="exact crystal descriptors the model reads beside the grid (models/descriptors.py): the "
                        "crystal density from the CIF, the energy histogram of the grid (default: the grid only)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="fraction held out (seeded) for validation metrics; 0 for none (default: %(default)s)")
    p.add_argument("--patience", type=int, default=None, metavar="EPOCHS",
                   help="early stopping after this many epochs without a better validation loss (default: off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, initialisation and augmentation "
                   "(default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: CUDA if "
                   "available)")
    p.add_argument("--base-model", default=None, metavar="DIR",
                   help="fine-tune from this model folder (or shipped model name)")
    p.add_argument("--freeze", choices=["conv", "all-but-output"], default=None,
                   help="with --base-model: layers kept fixed (default: none)")
    p.add_argument("--input-clip", type=_positive_float, default=None, metavar="B",
                   help="with --base-model: clip Boltzmann factors at B instead of the base model's clip (e.g. 5 "
                        "with a few hundred labels, together with --vibration-copies 2; README, learning curves)")
    p.add_argument("--trees", action="store_true",
                   help="a hybrid model: average the network with Extra Trees on the grid's energy histogram and the "
                        "crystal density, fitted on the training split, the weight chosen on the validation split "
                        "(one --target; models/hybrid.py)")
    p.add_argument("--name", default="retnet-custom", help="model name in the card (default: %(default)s)")
    p.add_argument("--version", default="1", help="model version in the card (default: %(default)s)")
    p.add_argument("--description", default="", help="free text stored in the card")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR", help="grid cache folder (default: none)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: all cores)")
    p.add_argument("--bootstrap", type=int, default=10_000, metavar="N",
                   help="bootstrap resamples for the confidence intervals (default: %(default)s)")
    p.add_argument("--strict", action="store_true", help="exit code 1 when any labelled structure was left out")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("predict", help="predict properties of CIFs with a trained model",
                       description="Predict with a model (default: the shipped one). One row per structure and "
                       "output; a CIF that fails gives a row with its error and exit code 1, other rows still print.")
    p.add_argument("cifs", nargs="+", type=Path, metavar="CIF", help="CIF files (name = file stem)")
    p.add_argument("--model", default=None, metavar="MODEL_DIR_OR_NAME",
                   help="model folder/archive or shipped model name (default: the shipped model)")
    p.add_argument("--format", choices=["table", "csv"], default="table",
                   help="output format on stdout; CSV columns name,value,unit,property,model,sha256,error "
                   "(default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device for inference (default: CUDA if available)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: all cores)")
    p.add_argument("--units", choices=["mol/kg", "cm3(STP)/cm3"], default="mol/kg",
                   help="unit of the values: the model's mol/kg, or volumetric cm3(STP)/cm3 converted with the "
                        "crystal density from the CIF (STP = 273.15 K, 1 atm)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="metrics of a model on labelled CIFs",
                       description="Predict labelled CIFs and print R², MAE, RMSE and Spearman ρ with 95%% "
                       "percentile-bootstrap confidence intervals (MAE and RMSE in the target's unit).")
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="model folder/archive or shipped name")
    p.add_argument("--data", type=Path, required=True, metavar="DIR_OR_ZIP", help="folder or .zip of CIFs")
    p.add_argument("--labels", type=Path, required=True, metavar="CSV", help="labels CSV (name + target columns)")
    p.add_argument("--target", action="append", default=None, metavar="COLUMN",
                   help="label column per model output (default: the model's target names)")
    p.add_argument("--plot", type=Path, default=None, metavar="PNG", help="write a parity plot here")
    p.add_argument("--device", default=None, help="torch device (default: CUDA if available)")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR", help="grid cache folder (default: none)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: all cores)")
    p.add_argument("--bootstrap", type=int, default=10_000, metavar="N",
                   help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    p.add_argument("--strict", action="store_true", help="exit code 1 when any labelled structure was left out")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("serve", help="run the HTTP API (embedded mode by default)",
                       description="Start the HTTP API. Without a configured broker it runs in embedded mode: "
                       "SQLite and local storage in --data-dir, workers inside the process.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="data folder for the embedded database and storage (default: from settings)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("worker", help="run a Celery worker",
                       description="Run a Celery worker consuming the given queues (scaled mode).")
    p.add_argument("-Q", "--queues", default="voxels,inference,training",
                   help="comma-separated queues: voxels, inference, training (default: %(default)s)")
    p.add_argument("-c", "--concurrency", type=int, default=None, metavar="N",
                   help="worker processes (default: Celery's choice)")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("db", help="database migrations (scaled mode)",
                       description="Alembic migrations of the database named by RETNET_DATABASE_URL (default: the "
                       "embedded SQLite file in RETNET_DATA_DIR). Run 'retnet db upgrade' once before starting the API "
                       "and workers on a new or older database.")
    db_sub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    q = db_sub.add_parser("upgrade", help="migrate the database to the newest schema (or --revision)")
    q.add_argument("--revision", default="head", help="target revision (default: %(default)s)")
    q.set_defaults(func=_cmd_db)
    q = db_sub.add_parser("current", help="print the revision the database is at")
    q.set_defaults(func=_cmd_db)

    p = sub.add_parser("sweep", help="re-enqueue jobs stuck in 'queued' (lost task messages)",
                       description="Send again the tasks of items and training jobs still 'queued' after the given "
                       "time, for scaled deployments (the API process also sweeps every RETNET_SWEEP_INTERVAL_S s). "
                       "Safe to repeat or run from cron: tasks are idempotent.")
    p.add_argument("--older-than", type=float, default=None, metavar="MIN",
                   help="minutes in 'queued' without progress (default: RETNET_SWEEP_AFTER_S, 10 min)")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("purge", help="delete finished jobs, uploads and cached voxel grids older than N days",
                       description="Retention: delete finished jobs (with their items and predictions) last changed "
                       "more than DAYS days ago, the raw uploads no remaining job or structure uses and the cached "
                       "voxel grids no remaining job uses, both written more than DAYS days ago (file mtime / S3 "
                       "LastModified). Queued and running jobs and registered models are never deleted. The API "
                       "does the same hourly with RETNET_RETENTION_DAYS.")
    p.add_argument("--older-than", type=_positive_days, required=True, metavar="DAYS",
                   help="age in days (fractions allowed: 0.5 = 12 h)")
    p.add_argument("--dry-run", action="store_true", help="report (and list the objects) without deleting anything")
    p.add_argument("--verbose", "-v", action="store_true", help="list the deleted objects")
    p.set_defaults(func=_cmd_purge)

    from app.cli_client import register_client
    from app.cli_design import register_design
    from app.cli_keys import register_keys

    register_keys(sub)
    register_client(sub)
    register_design(sub)

    try:
        from app.cli_simulate import register_simulate
    except ImportError:
        pass
    else:
        register_simulate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``retnet``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        _err(f"retnet {args.command}: error: {exc}")
        return EXIT_FAILURES
    except (FileNotFoundError, KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        _err(f"retnet {args.command}: error: {message}")
        return EXIT_FAILURES
    except RuntimeError as exc:
        from app.db.migrate import DatabaseNotMigratedError

        if not isinstance(exc, DatabaseNotMigratedError):
            raise
        _err(f"retnet {args.command}: error: {exc}")
        return EXIT_FAILURES
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
