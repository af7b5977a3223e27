"""Reproduce the shipped CH4-uptake model: split, baselines, RetNet, transfer learning, model card.

Stages (each resumable; results land in ``--runs`` as JSON, the shipped model in ``models/shipped/``;
the README's "Model" section has the exact commands behind the shipped model)::

    python scripts/voxelize_coremof.py --labelled            # grids for the labelled structures
    python scripts/voxelize_coremof.py --all                 # grids for all CoRE MOF 2019 (pre-training)
    python scripts/ch4_model.py baselines                    # RF on geometric descriptors / energy histograms
    python scripts/ch4_model.py scratch --sizes 50 100 200 all
    python scripts/ch4_model.py pretrain --limit 20000 --epochs 5 --log-targets
    python scripts/widom_targets.py && python scripts/ch4_model.py pretrain --limit 20000 --epochs 5 \
        --log-targets --targets geometric+widom --name pretrained_widom      # + CH4 Henry coefficient and Q_st
    python scripts/ch4_model.py finetune --sizes 50 100 200 all --freeze none conv
    python scripts/ch4_model.py finetune --sizes all --seed 1  # re-runs for a seed ensemble
    python scripts/ch4_model.py finetune --sizes 50 --seed 1 --subset-seed 0   # member 1 of subset 0's ensemble
    python scripts/ch4_model.py ensembles                     # those members averaged, per size and subset
    python scripts/ch4_model.py report                        # table + learning-curve plot
    python scripts/ch4_model.py ship --ensemble --version N   # best model → models/shipped/retnet-ch4
    python scripts/ch4_model.py versus --earlier /tmp/v7/models/shipped/retnet-ch4   # against the last release

Labels: the reference table plus the extra GCMC labels (``--extra-rows N`` pins the first N rows of
that growing file). Split (fixed, seed 0): 20 % of the labelled structures are the test set, never
used for any choice; of the rest, 10 % is the validation set (choosing between variants) and the
remainder the training pool (see :func:`dataset`). Smaller training sizes are seeded subsets of the pool.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.datasets import (  # noqa: E402
    CH4_EXTRA_LABELS,
    CH4_LABELS,
    GEOMETRIC_DESCRIPTORS,
    WIDOM_COLUMNS,
    coremof_properties,
    default_cache_dir,
    hash_split,
    labels_sha256,
    read_labels,
)
from models.descriptors import energy_histogram  # noqa: E402
from models.params import VoxelParams  # noqa: E402

LABELS = CH4_LABELS
#: CH4 labels added with ``retnet simulate`` under the same protocol (bench/extend_labels.sh); split like the rest.
EXTRA_LABELS = CH4_EXTRA_LABELS
TARGET = "ch4_uptake_mol_kg"
UNIT = "mol/kg"
PROPERTY = "CH4 uptake, 298 K, 5.8 bar"
SPLIT_SEED = 0
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1
#: Pre-training targets: cheap geometric descriptors known for every CoRE MOF.
PRETRAIN_TARGETS = ["LCD", "PLD", "LFPD", "cm3_g", "ASA_m2_cm3", "AV_VF", "AV_cm3_g"]
HEAVY_TAILED = {"LCD", "PLD", "LFPD", "cm3_g", "AV_cm3_g"}


def grid_dir() -> Path:
    return default_cache_dir() / "voxels" / VoxelParams().params_hash()


def load_grids(names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Stack cached grids for the names that have one; returns (grids, names kept)."""
    folder = grid_dir()
    kept = [n for n in names if (folder / f"{n}.npy").exists()]
    grids = np.stack([np.load(folder / f"{n}.npy") for n in kept]) if kept else np.zeros((0, 25, 25, 25), np.float32)
    return grids.astype(np.float32), kept


def dataset(extra_rows: int | None = None) -> dict[str, Any]:
    """Labelled structures with grids, and the fixed split (indices into them).

    The reference labels are split by a seeded permutation (as in the first release); labels added
    later with ``retnet simulate`` (:data:`EXTRA_LABELS`) are split with the same fractions by
    :func:`models.datasets.hash_split` (test rounded up, so it stays ≥ 20 % of all labels; growing
    the labels moves few structures across the split).
    """
    reference = read_labels(LABELS, TARGET)
    grids, names = load_grids(reference["name"].tolist())
    table = reference.set_index("name").loc[names].reset_index()
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(len(names))
    n_test = int(round(TEST_FRACTION * len(names)))
    test, rest = order[:n_test], order[n_test:]
    n_val = int(round(VAL_FRACTION * len(rest)))
    val, pool = rest[:n_val], rest[n_val:]
    n_labelled = len(reference)
    label_files = [LABELS.name]
    extra_label_rows = 0
    if EXTRA_LABELS.exists():
        extra = read_labels(EXTRA_LABELS, TARGET, rows=extra_rows)
        extra = extra[~extra["name"].isin(reference["name"])].drop_duplicates("name")
        extra_grids, extra_names = load_grids(extra["name"].tolist())
        extra = extra.set_index("name").loc[extra_names].reset_index()
        extra_test, extra_val, extra_train = hash_split(extra_names, TEST_FRACTION, VAL_FRACTION, SPLIT_SEED)
        test = np.concatenate([test, len(names) + extra_test])
        val = np.concatenate([val, len(names) + extra_val])
        pool = np.concatenate([pool, len(names) + extra_train])
        table = pd.concat([table, extra[table.columns.intersection(extra.columns)]], ignore_index=True)
        grids = np.concatenate([grids, extra_grids])
        names = names + extra_names
        n_labelled += len(extra)
        label_files.append(EXTRA_LABELS.name)
        extra_label_rows = len(pd.read_csv(EXTRA_LABELS, nrows=extra_rows, usecols=["name"]))  # rows read
    y = table[TARGET].to_numpy(dtype=np.float64)
    return {"table": table, "grids": grids, "names": names, "y": y, "test": test, "val": val, "pool": pool,
            "density": crystal_densities(names),
            "n_labelled": n_labelled, "label_files": label_files, "extra_label_rows": extra_label_rows}


def train_subset(pool: np.ndarray, size: str | int, seed: int = SPLIT_SEED) -> np.ndarray:
    if size == "all" or int(size) >= len(pool):
        return pool
    return np.random.default_rng(seed + 1).permutation(pool)[: int(size)]


def save_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float))
    tmp.rename(path)


def metrics_dict(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    from models.metrics import regression_metrics

    out = regression_metrics(y_true, y_pred, n_boot=10000, seed=0)
    return {k: (v.model_dump() if hasattr(v, "model_dump") else dict(v.__dict__)) for k, v in out.items()}


def crystal_densities(names: list[str]) -> np.ndarray:
    """Exact crystal densities (g/cm³) from the CoRE MOF CIFs, as serving computes them (parsed once, cached)."""
    from models.datasets import coremof_structures

    return coremof_structures(names)["density_g_cm3"].to_numpy(dtype=np.float64)


def descriptor_inputs(data: dict[str, Any], names: list[str] | None, train: np.ndarray) -> tuple[Any, np.ndarray]:
    """(DescriptorSpec fitted on the ``train`` rows, standardized descriptors of every structure) or (None, None)."""
    from models.descriptors import training_descriptors

    if not names:
        return None, None
    return training_descriptors(names, data["grids"], data["density"], train)


def cmd_baselines(args: argparse.Namespace) -> None:
    from sklearn.ensemble import RandomForestRegressor

    data = dataset(extra_rows=args.extra_rows)
    props = coremof_properties()
    features = {
        "rf_geometric": props.loc[data["names"], GEOMETRIC_DESCRIPTORS].to_numpy(dtype=np.float64),
        "rf_energy_histogram": energy_histogram(data["grids"]),
    }
    for model_name, x in features.items():
        for size in args.sizes:
            train = np.concatenate([train_subset(data["pool"], size), data["val"]]) if size == "all" else \
                train_subset(data["pool"], size)
            rf = RandomForestRegressor(n_estimators=500, random_state=0, n_jobs=args.jobs)
            rf.fit(x[train], data["y"][train])
            pred = rf.predict(x[data["test"]])
            result = {"model": model_name, "size": len(train), "size_label": str(size),
                      "test": metrics_dict(data["y"][data["test"]], pred)}
            save_json(args.runs / f"{model_name}_{size}.json", result)
            print(model_name, size, len(train), f"R2={result['test']['r2']['value']:.3f}", flush=True)


def epoch_printer() -> Callable[[dict[str, Any]], None]:
    """A training progress callback printing one line per epoch with the time since its creation."""
    started = time.time()

    def progress(event: dict[str, Any]) -> None:
        print(f"  epoch {event['epoch']}/{event['epochs']} loss {event['train_loss']:.4f} "
              f"val R2 {event.get('val_r2')} ({time.time() - started:.0f}s)", flush=True)

    return progress


def vibrated_grids(names: list[str], copies: int, amplitude: float) -> np.ndarray:
    """Grids (N, copies, 25, 25, 25) of thermally jittered copies (models.vibration), cached on disk by the copy's
    hash (content hash + amplitude + seed) next to the plain grids."""
    from models.datasets import coremof_cif
    from models.structure import parse_cif
    from models.vibration import vibrated_copies
    from models.voxels import compute_voxels

    folder = grid_dir() / "vibrated"
    folder.mkdir(parents=True, exist_ok=True)
    out = np.empty((len(names), copies, 25, 25, 25), np.float32)
    for i, name in enumerate(names):
        crystal = parse_cif(coremof_cif(name).read_bytes(), name)
        for j, copy in enumerate(vibrated_copies(crystal, copies, amplitude)):
            path = folder / f"{copy.sha256}.npy"
            if not path.exists():
                np.save(path.with_suffix(".tmp.npy"), compute_voxels(copy, VoxelParams()))
                path.with_suffix(".tmp.npy").rename(path)
            out[i, j] = np.load(path)
    return out


def _train(data: dict[str, Any], train: np.ndarray, *, epochs: int, seed: int, base: Any = None,
           freeze: str | None = None, augment: bool = True, standardizer: Any = None,
           learning_rate: float = 1e-3, translate: bool = False, vibration_copies: int = 0,
           vibration_amplitude: float | None = None,
           descriptors: np.ndarray | None = None, spec: Any = None) -> tuple[Any, list[dict[str, Any]]]:
    from models.descriptors import with_copy_descriptors
    from models.training import TrainConfig, train_retnet
    from models.vibration import DEFAULT_AMPLITUDE, with_vibrated

    config = TrainConfig(epochs=epochs, seed=seed, augment=augment, freeze=freeze, patience=None,
                         learning_rate=learning_rate, translate=translate)
    val = (data["grids"][data["val"]], data["y"][data["val"]][:, None],
           None if descriptors is None else descriptors[data["val"]])
    progress = epoch_printer()
    x, y = data["grids"][train], data["y"][train][:, None]
    d = None if descriptors is None else descriptors[train]
    if vibration_copies:
        copies = vibrated_grids([data["names"][i] for i in train], vibration_copies,
                                DEFAULT_AMPLITUDE if vibration_amplitude is None else vibration_amplitude)
        x, y = with_vibrated(x, y, copies)
        if d is not None:
            d = with_copy_descriptors(spec, d, x[len(train):], data["density"][train], vibration_copies)
    result = train_retnet(x, y, config, val=val, base_model=base, progress=progress, standardizer=standardizer,
                          descriptors=d)
    return result, result.history


def _evaluate(result: Any, data: dict[str, Any], descriptors: np.ndarray | None = None
              ) -> tuple[dict[str, Any], np.ndarray]:
    from models.training import predict_grids

    test = data["test"]
    pred = predict_grids(result.model, result.standardizer, data["grids"][test],
                         descriptors=None if descriptors is None else descriptors[test])[:, 0]
    return metrics_dict(data["y"][test], pred), pred


def _save_run(args: argparse.Namespace, tag: str, result: Any, data: dict[str, Any], train: np.ndarray,
              extra: dict[str, Any], spec: Any = None, descriptors: np.ndarray | None = None) -> None:
    import torch

    run_dir = args.runs / tag
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": result.model.state_dict(), "standardizer": result.standardizer.to_dict(),
                "history": result.history, "descriptors": None if spec is None else spec.to_dict()},
               run_dir / "checkpoint.pt")
    test_metrics, pred = _evaluate(result, data, descriptors)
    save_json(args.runs / f"{tag}.json", {
        "tag": tag, "size": len(train), "test": test_metrics, "history": result.history,
        "test_names": [data["names"][i] for i in data["test"]], "test_pred": pred.tolist(), **extra,
    })
    print(tag, len(train), f"R2={test_metrics['r2']['value']:.3f} MAE={test_metrics['mae']['value']:.3f}", flush=True)


def cmd_scratch(args: argparse.Namespace) -> None:
    data = dataset(extra_rows=args.extra_rows)
    variant = "scratch" + ("_translate" if args.translate else "") + _vibration_tag(args) + _descriptor_tag(args) \
        + ("" if args.seed == 0 else f"_seed{args.seed}")
    for size in args.sizes:
        tag = f"retnet_{variant}_{size}"
        if (args.runs / f"{tag}.json").exists():
            continue
        train = train_subset(data["pool"], size, args.seed if args.subset_by_seed else SPLIT_SEED)
        spec, descriptors = descriptor_inputs(data, args.descriptors, train)
        result, _ = _train(data, train, epochs=args.epochs, seed=args.seed, translate=args.translate,
                           vibration_copies=args.vibration_copies, vibration_amplitude=args.vibration_amplitude,
                           descriptors=descriptors, spec=spec)
        _save_run(args, tag, result, data, train, {"variant": variant, "size_label": str(size),
                                                   "translate": args.translate,
                                                   "vibration_copies": args.vibration_copies,
                                                   "descriptors": args.descriptors or []}, spec, descriptors)


def _vibration_tag(args: argparse.Namespace) -> str:
    return f"_vib{args.vibration_copies}" if getattr(args, "vibration_copies", 0) else ""


#: Short run-tag names of the descriptor blocks.
_DESCRIPTOR_TAGS = {"log_density": "rho", "energy_histogram": "hist"}


def _descriptor_tag(args: argparse.Namespace) -> str:
    names = getattr(args, "descriptors", None) or []
    return "_desc-" + "-".join(_DESCRIPTOR_TAGS[n] for n in names) if names else ""


#: Physics pre-training targets of scripts/widom_targets.py (TraPPE CH4, 298 K, infinite dilution).
WIDOM_TARGETS = WIDOM_COLUMNS


def widom_targets_table() -> pd.DataFrame:
    """The finite Widom targets of every structure ``scripts/widom_targets.py`` computed, indexed by name."""
    from models.datasets import read_widom_table, widom_table_path

    if not widom_table_path().exists():
        raise FileNotFoundError(f"{widom_table_path()}: run scripts/widom_targets.py first")
    values = read_widom_table()
    return values[np.isfinite(values).all(axis=1)]


def crystal_blocks(data: dict[str, Any], names: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The crystal blocks among descriptor blocks ``names`` of every structure of ``data`` (None: none named)."""
    from models.datasets import coremof_crystal_blocks

    return coremof_crystal_blocks(list(data["names"]), tuple(names)) or None


def cmd_pretrain(args: argparse.Namespace) -> None:
    """Pre-train RetNet on descriptors of CoRE MOFs (multi-output, standardized targets): Zeo++ geometry, plus
    optionally energy-histogram statistics or the Widom CH4 targets."""
    import torch

    from models.training import TrainConfig, train_retnet

    data = dataset(extra_rows=args.extra_rows)
    excluded = {data["names"][i] for i in np.concatenate([data["test"], data["val"]])}
    props = coremof_properties()[PRETRAIN_TARGETS].dropna()
    available = sorted(p.stem for p in grid_dir().glob("*.npy") if not p.name.endswith(".tmp.npy"))
    names = [n for n in available if n in props.index and n not in excluded]
    rng = np.random.default_rng(SPLIT_SEED)
    names = sorted(rng.permutation(names)[: args.limit].tolist())
    grids, names = load_grids(names)
    y = props.loc[names].to_numpy(dtype=np.float64)
    targets = list(PRETRAIN_TARGETS)
    if args.log_targets:
        # Pore sizes, density and pore volume are heavy-tailed (LCD up to 72 Å, 99th percentile 22 Å).
        for j, column in enumerate(targets):
            if column in HEAVY_TAILED:
                y[:, j] = np.log1p(y[:, j])
                targets[j] = f"log1p_{column}"
    if args.targets == "geometric+widom":
        # CH4 Henry coefficient and heat of adsorption at infinite dilution (models/widom.py; no GCMC)
        widom = widom_targets_table()
        keep = [i for i, n in enumerate(names) if n in widom.index]
        grids, y, names = grids[keep], y[keep], [names[i] for i in keep]
        physics = widom.loc[names, list(WIDOM_TARGETS)].to_numpy(dtype=np.float64)
        # closed frameworks give log10 K_H down to -44 and negative heats: winsorize at the 0.5/99.5 percentiles
        low, high = np.percentile(physics, [0.5, 99.5], axis=0)
        y = np.column_stack([y, np.clip(physics, low, high)])
        targets += list(WIDOM_TARGETS)
    if args.targets == "geometric+energy":
        # Energy-histogram statistics of the structure's own grid: free for every structure.
        hist = energy_histogram(grids)
        y = np.column_stack([y, hist[:, :-1], np.log(hist[:, -1])])
        targets += [f"energy_bin_{i}" for i in range(hist.shape[1] - 1)] + ["log_mean_boltzmann"]
    mean, std = y.mean(axis=0), y.std(axis=0)
    std[std == 0] = 1.0
    print(f"pre-training on {len(names)} structures, {len(targets)} targets", flush=True)
    config = TrainConfig(epochs=args.epochs, seed=args.seed, val_fraction=0.05, augment=True)
    progress = epoch_printer()
    result = train_retnet(grids, (y - mean) / std, config, progress=progress)
    out = args.runs / args.name
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": result.model.state_dict(), "standardizer": result.standardizer.to_dict(),
                "targets": targets, "target_mean": mean.tolist(), "target_std": std.tolist(),
                "names": names}, out / "checkpoint.pt")
    save_json(args.runs / "pretrain" / f"{args.name}.json", {"size": len(names), "targets": targets,
                                                             "history": result.history, "epochs": args.epochs})


def _load_pretrained(args: argparse.Namespace, name: str) -> Any:
    import torch

    from models.retnet import RetNet
    from models.transforms import Standardizer

    path = args.runs / name / "checkpoint.pt"
    if name == "pretrained" and not path.exists():  # no `pretrain` run here: the shipped backbone (what it made)
        from models.artifacts import load_model

        shipped = load_model(ROOT / "models" / "shipped" / "retnet-coremof-geometry", device="cpu")
        print(f"backbone: the shipped {shipped.ref} ({path} does not exist)", flush=True)
        return shipped.model, shipped.standardizer
    checkpoint = torch.load(path, weights_only=False)
    model = RetNet(n_outputs=len(checkpoint["targets"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model, Standardizer.from_dict(checkpoint["standardizer"])


def cmd_finetune(args: argparse.Namespace) -> None:
    data = dataset(extra_rows=args.extra_rows)
    base, base_standardizer = _load_pretrained(args, args.base)
    if args.input_clip is not None:  # saturate strong binding sites harder than the backbone did (see README)
        from dataclasses import replace

        base_standardizer = replace(base_standardizer, clip=args.input_clip)
    suffix = ("" if args.base == "pretrained" else f"_{args.base}") + ("" if args.lr == 1e-3 else f"_lr{args.lr:g}")
    suffix += "" if args.input_clip is None else f"_clip{args.input_clip:g}"
    suffix += "_translate" if args.translate else ""
    suffix += _vibration_tag(args) + _descriptor_tag(args)
    suffix += "" if args.seed == 0 else f"_seed{args.seed}"
    subset_seed = args.subset_seed if args.subset_seed is not None else (
        args.seed if args.subset_by_seed else SPLIT_SEED)
    suffix += "" if args.subset_seed is None else f"_subset{args.subset_seed}"
    for freeze in args.freeze:
        for size in args.sizes:
            tag = f"retnet_finetune{suffix}_{freeze}_{size}"
            if (args.runs / f"{tag}.json").exists():
                continue
            train = train_subset(data["pool"], size, subset_seed)
            spec, descriptors = descriptor_inputs(data, args.descriptors, train)
            # The backbone's input standardization travels with it.
            result, _ = _train(data, train, epochs=args.epochs, seed=args.seed, base=base,
                               freeze=None if freeze == "none" else freeze, standardizer=base_standardizer,
                               learning_rate=args.lr, translate=args.translate,
                               vibration_copies=args.vibration_copies, vibration_amplitude=args.vibration_amplitude,
                               descriptors=descriptors, spec=spec)
            _save_run(args, tag, result, data, train, {"variant": f"finetune{suffix}_{freeze}",
                                                       "size_label": str(size), "base": args.base,
                                                       "translate": args.translate,
                                                       "vibration_copies": args.vibration_copies,
                                                       "descriptors": args.descriptors or []}, spec, descriptors)


def _runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = [json.loads(p.read_text()) for p in sorted(args.runs.glob("*.json"))]
    return [r for r in runs if "test" in r]


#: Legend of the learning-curve plot for the main variants (others keep their run names).
CURVE_LABELS = {"rf_geometric": "RF, geometric descriptors (thesis baseline)",
                "rf_energy_histogram": "RF, energy histogram", "scratch": "RetNet from scratch",
                "finetune_none": "RetNet fine-tuned", "finetune_conv": "RetNet fine-tuned, conv. frozen",
                "finetune_translate_none": "RetNet fine-tuned + periodic translations",
                "scratch_translate": "RetNet from scratch + periodic translations"}


def cmd_report(args: argparse.Namespace) -> None:
    """Print every run's test metrics and plot the learning curves (seed means where a size has several seeds)."""
    from models.metrics import seed_mean_metrics
    from models.plots import learning_curve_plot

    data = dataset(extra_rows=args.extra_rows)
    label_of = dict(zip(data["names"], data["y"].tolist(), strict=True))
    rows = []
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in _runs(args):
        name = run.get("variant") or run.get("model")
        rows.append((name, run["size"], run["test"]["r2"], run["test"]["mae"]))
        groups.setdefault((re.sub(r"_seed\d+", "", name), run["size"]), []).append(run)
    curves: dict[str, list[tuple[int, float, float, float]]] = {}
    for (name, size), runs in sorted(groups.items()):
        r2 = runs[0]["test"]["r2"]
        if len(runs) > 1:  # the curve shows the mean over seeds, with a CI that resamples the test set
            names = runs[0]["test_names"]
            if any(r["test_names"] != names for r in runs):
                raise ValueError(f"runs of {name} at size {size} were tested on different structures")
            mean = seed_mean_metrics([label_of[n] for n in names], [r["test_pred"] for r in runs])
            r2 = mean["r2"].model_dump()
            rows.append((f"{name}, mean of {len(runs)} seeds", size, r2, mean["mae"].model_dump()))
        curves.setdefault(CURVE_LABELS.get(name, name), []).append((size, r2["value"], r2["ci_low"], r2["ci_high"]))
    learning_curve_plot(curves, args.runs / "learning_curves.png")
    print("| model | training size | test R² [95% CI] | test MAE (mol/kg) [95% CI] |")
    print("|---|---|---|---|")
    for name, size, r2, mae in sorted(rows, key=lambda r: (r[0], r[1])):
        print(f"| {name} | {size} | {r2['value']:.3f} [{r2['ci_low']:.3f}, {r2['ci_high']:.3f}] | "
              f"{mae['value']:.3f} [{mae['ci_low']:.3f}, {mae['ci_high']:.3f}] |")


def cmd_ship(args: argparse.Namespace) -> None:
    """Copy the best RetNet run (by the final weights' validation R², full training pool) into models/shipped/."""
    import shutil

    from models.artifacts import ModelCard, Target, save_model
    from models.plots import history_plot, parity_plot

    data = dataset(extra_rows=args.extra_rows)
    # Configurations compete by their seed-0 run; other seeds only join an --ensemble.
    candidates = [r for r in _runs(args) if r.get("tag", "").startswith("retnet_") and r.get("size_label") == "all"
                  and "_seed" not in r["tag"]]
    if args.tag:
        candidates = [r for r in candidates if r["tag"] == args.tag]
    best = max(candidates, key=lambda r: r["history"][-1].get("val_r2") or -1e9)
    model, checkpoint = _load_run(args, best["tag"])
    spec = checkpoint.get("descriptors")
    best = dict(best, validation_r2=best["history"][-1].get("val_r2"))
    if args.ensemble:
        model, best = _seed_ensemble(args, data, best, checkpoint)
    table = data["table"]
    card = ModelCard(
        name="retnet-ch4",
        version=args.version,
        n_outputs=1,
        targets=[Target(name=TARGET, unit=UNIT, property=PROPERTY)],
        voxel_params=VoxelParams(),
        standardization=checkpoint["standardizer"],
        descriptors=spec,
        training_data={
            "source": "CoRE MOF 2019-ASR (core-mof package) structures; CH4 uptake labels from RASPA2 GCMC, "
                      "DESIGN.md §6 (models/data/: " + " + ".join(data["label_files"]) + ")",
            "label_files": data["label_files"],
            "extra_label_rows": data["extra_label_rows"],  # rows of the extra file read (--extra-rows)
            "n_labelled": data["n_labelled"], "n_with_grids": len(data["names"]),
            "n_train": best["size"], "n_val": len(data["val"]), "n_test": len(data["test"]),
            "split": f"seed {SPLIT_SEED}: test {TEST_FRACTION:.0%} of labelled, validation {VAL_FRACTION:.0%} "
                     "of the rest, training = remainder; reference labels by a seeded permutation, extra labels "
                     "in the order of a seeded hash of their names",
            "split_seed": SPLIT_SEED, "label_sha256": labels_sha256(table, [TARGET]),
            "test_names": best["test_names"],
        },
        metrics={"test": best["test"], "variant": best["variant"],
                 "validation_r2": best["validation_r2"],
                 "selection": "highest validation R² of the final weights among the full-size RetNet runs"
                              + (f", averaged with its re-runs under other seeds ({len(best['members'])} members; "
                                 f"validation R² {best['validation_r2']:.3f}, single run "
                                 f"{best['single_validation_r2']:.3f})" if "members" in best else "")
                              + "; the test set was used for nothing but this report"},
        training_config={"recipe": "thesis: MSE, Adam 1e-3, batch 64, StepLR(10, 0.5), augmentation"
                                   + (" + random periodic translations" if best.get("translate") else "")
                                   + (f"; crystal descriptors {', '.join(spec['names'])} read beside the grid"
                                      if spec else ""),
                         "translate": bool(best.get("translate")),
                         "descriptors": list(spec["names"]) if spec else [],
                         "epochs": len(best["history"]), "run": best["tag"]},
        description=f"RetNet predicting {PROPERTY} in {UNIT} from 25³ UFF energy voxels "
                    f"(probe ε=50 K, σ=2.5 Å, r_c=10 Å, T=298 K)"
                    + (f" and the crystal descriptors {', '.join(spec['names'])} (models/descriptors.py)."
                       if spec else "."),
    )
    out = ROOT / "models" / "shipped" / "retnet-ch4"
    if out.exists():
        shutil.rmtree(out)
    test_y = data["y"][data["test"]]
    pred = np.asarray(best["test_pred"])
    plots = args.runs / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    parity_plot(test_y, pred, plots / "parity.png", title=f"RetNet, test set (n={len(test_y)})", unit=UNIT,
                metrics=best["test"])
    history_plot(best["history"], plots / "history.png")
    extra = {"parity.png": plots / "parity.png", "history.png": plots / "history.png"}
    if (args.runs / "learning_curves.png").exists():
        extra["learning_curves.png"] = args.runs / "learning_curves.png"
    save_model(out, model, card, extra_files=extra)
    np.savetxt(out / "test_predictions.csv", np.column_stack([test_y, pred]), delimiter=",",
               header="true_mol_kg,predicted_mol_kg", comments="", fmt="%.6f")
    (out / "test_names.txt").write_text("\n".join(best["test_names"]) + "\n")
    base = best.get("base", "pretrained")
    if (args.runs / base / "checkpoint.pt").exists():
        _ship_backbone(args, base)
    print("shipped", best["tag"], "to", out)


def _seed_ensemble(args: argparse.Namespace, data: dict[str, Any], best: dict[str, Any],
                   checkpoint: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The selected run plus its re-runs with other seeds (same backbone, same input standardization), averaged."""

    from models.retnet import RetNetEnsemble
    from models.training import predict_grids
    from models.transforms import Standardizer

    runs = {r["tag"]: r for r in _runs(args) if "tag" in r}
    tags = [best["tag"]] + sorted(t for t in runs if t != best["tag"] and re.sub(r"_seed\d+", "", t) == best["tag"])
    members = []
    for tag in tags:
        member, member_checkpoint = _load_run(args, tag)
        if member_checkpoint["standardizer"] != checkpoint["standardizer"]:
            raise ValueError(f"{tag} used another input standardization than {best['tag']}")
        if member_checkpoint.get("descriptors") != checkpoint.get("descriptors"):
            raise ValueError(f"{tag} read other descriptors (or standardized them otherwise) than {best['tag']}")
        members.append(member)
    ensemble = RetNetEnsemble(members)
    standardizer = Standardizer.from_dict(checkpoint["standardizer"])
    descriptors = None
    if checkpoint.get("descriptors"):
        from models.descriptors import DescriptorSpec

        descriptors = DescriptorSpec.from_dict(checkpoint["descriptors"]).compute(data["grids"], data["density"])

    def predicted(rows: np.ndarray) -> np.ndarray:
        return predict_grids(ensemble, standardizer, data["grids"][rows],
                             descriptors=None if descriptors is None else descriptors[rows])[:, 0]

    val_pred, test_pred = predicted(data["val"]), predicted(data["test"])
    val_r2 = metrics_dict(data["y"][data["val"]], val_pred)["r2"]["value"]
    print(f"ensemble of {len(tags)} ({', '.join(tags)}): validation R2 {val_r2:.3f} "
          f"(single run {best['validation_r2']:.3f})", flush=True)
    run = dict(best, tag="+".join(tags), variant=f"{best['variant']} (ensemble of {len(tags)} seeds)",
               validation_r2=val_r2, single_validation_r2=best["validation_r2"],
               test=metrics_dict(data["y"][data["test"]], test_pred),
               test_pred=test_pred.tolist(), members=tags)
    return ensemble, run


def _card_data(card: Any, *, require_test_names: bool = False) -> tuple[dict[str, Any], np.ndarray]:
    """(the labelled data of a shipped model's split, re-derived from its card's ``extra_label_rows``; its
    training rows). The test split must equal the card's ``test_names`` (a card without them passes, unless
    ``require_test_names``)."""
    data = dataset(extra_rows=card.training_data.get("extra_label_rows"))
    test_names = [data["names"][i] for i in data["test"]]
    expected = card.training_data.get("test_names", None if require_test_names else test_names)
    if expected is None or sorted(test_names) != sorted(expected):
        raise SystemExit("the re-derived test split differs from the card's test_names: wrong --extra-rows?")
    train = data["pool"] if card.training_data.get("n_train") == len(data["pool"]) else \
        train_subset(data["pool"], card.training_data["n_train"])
    return data, train


def cmd_hybrid(args: argparse.Namespace) -> None:
    """Blend a shipped network with Extra Trees on its own split, and re-release it as ``--version``.

    The trees (:mod:`models.hybrid`; ``--tree-features``, by default :data:`models.hybrid.TREE_FEATURES`) are
    fitted on the model's training split, the network's weight in the blend is chosen on the validation split, the
    blend is scored on the test split; σ and the domain are then re-calibrated on the blend (``calibrate``).
    """
    import shutil
    import tempfile

    from models.artifacts import CARD_FILE, load_model, save_trees
    from models.hybrid import fit_hybrid, tree_features
    from models.plots import parity_plot
    from models.training import member_outputs_grids
    from models.trees import MIN_SAMPLES_LEAF, N_TREES

    loaded = load_model(args.model, device="cpu")
    card = loaded.card
    if loaded.trees is not None:
        if not args.reblend:
            raise SystemExit(f"{loaded.ref} is already a hybrid model (--reblend replaces its trees)")
        # its networks as released before their trees: the description without the trees' sentence
        card = card.model_copy(update={"description": card.description.split("; averaged with Extra Trees")[0]
                                       .rstrip(".") + "."})
    data, train = _card_data(card, require_test_names=True)
    test, val = data["test"], data["val"]
    g, y = data["grids"], data["y"]
    rows = tree_features(g, data["density"], args.tree_features, crystal_blocks(data, args.tree_features))
    network = member_outputs_grids(loaded.model, loaded.standardizer, g,
                                   descriptors=loaded.descriptors(g, data["density"]))[0].mean(axis=0)[:, 0]
    hybrid, selection = fit_hybrid(rows, y, train, val, network[val], jobs=args.jobs, features=args.tree_features)
    weight, by_trees, blend = hybrid.weight, hybrid.trees.predict(rows), hybrid.blend(network, rows)
    scores = {name: metrics_dict(y[test], pred[test]) for name, pred in
              (("hybrid", blend), ("network", network), ("trees", by_trees))}
    val_r2 = {name: float(metrics_dict(y[val], pred[val])["r2"]["value"]) for name, pred in
              (("hybrid", blend), ("network", network), ("trees", by_trees))}
    out = Path(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model"
        shutil.copytree(out, staged)
        save_trees(staged, hybrid, n_trees=N_TREES, min_samples_leaf=MIN_SAMPLES_LEAF,
                   fitted_on=f"the training split ({len(train)} structures)", weight_selection=selection)
        hybrid_card = json.loads((staged / CARD_FILE).read_text())
        hybrid_card.update(
            version=args.version, uncertainty=None, domain=None, training_data={**card.training_data, "trees": True},
            description=f"{card.description.rstrip('.')}; averaged with Extra Trees on "
                        f"{' + '.join(args.tree_features)} (network weight {weight:.2f}; models/hybrid.py, "
                        "models/descriptors.py).",
            metrics={**card.metrics, "test": scores["hybrid"], "network_test": scores["network"],
                     "trees_test": scores["trees"], "validation_r2": val_r2["hybrid"],
                     "network_validation_r2": val_r2["network"], "trees_validation_r2": val_r2["trees"],
                     "selection": card.metrics.get("selection", "") + f"; blended with trees, network weight "
                                  f"{weight:.2f} chosen on the validation split"})
        (staged / CARD_FILE).write_text(json.dumps(hybrid_card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        np.savetxt(staged / "test_predictions.csv", np.column_stack([y[test], blend[test]]), delimiter=",",
                   header="true_mol_kg,predicted_mol_kg", comments="", fmt="%.6f")
        parity_plot(y[test], blend[test], staged / "parity.png", unit=UNIT, metrics=scores["hybrid"],
                    title=f"{card.name}:{args.version} (RetNet + trees), test set (n={len(test)})")
        load_model(staged, device="cpu")  # verifies the re-released folder
        shutil.rmtree(out)
        shutil.copytree(staged, out)
    for name in scores:
        r2, mae = scores[name]["r2"], scores[name]["mae"]
        print(f"{name:8s} validation R2 {val_r2[name]:.3f}  test R2 {_ci(r2)}  MAE {_ci(mae)}", flush=True)
    print(f"network weight {weight:.2f}; re-calibrating σ on the blend", flush=True)
    cmd_calibrate(args)


def _ship_backbone(args: argparse.Namespace, base: str) -> None:
    import torch

    from models.artifacts import ModelCard, Target, save_model

    checkpoint = torch.load(args.runs / base / "checkpoint.pt", weights_only=False)
    model, _ = _load_pretrained(args, base)
    info = json.loads((args.runs / "pretrain" / f"{base}.json").read_text())
    card = ModelCard(
        name="retnet-coremof-geometry",
        version=args.version,
        n_outputs=len(checkpoint["targets"]),
        targets=[Target(name=t, unit="standardized", property=f"{t} (z-score; mean {m:.4g}, std {s:.4g})")
                 for t, m, s in zip(checkpoint["targets"], checkpoint["target_mean"], checkpoint["target_std"],
                                    strict=True)],
        voxel_params=VoxelParams(),
        standardization=checkpoint["standardizer"],
        training_data={"source": "CoRE MOF 2019-ASR: geometric descriptors of the core-mof CSV"
                                  + (" and energy-histogram statistics of each grid" if "energy" in base else ""),
                       "n_train": info["size"],
                       "excluded": "the CH4 test and validation structures"},
        metrics={"final_val_r2": info["history"][-1].get("val_r2")},
        training_config={"epochs": info["epochs"]},
        description="Pre-trained RetNet backbone (multi-output geometric descriptors); a starting point for "
                    "fine-tuning (base_model) on your own adsorption labels.",
    )
    out = ROOT / "models" / "shipped" / "retnet-coremof-geometry"
    save_model(out, model, card, overwrite=True)


def cmd_calibrate(args: argparse.Namespace) -> None:
    """Calibrate σ (validation split), fit the applicability domain (training pool), score both (test split).

    Re-releases the model folder ``--model`` as ``--version``: same weights, the card gains ``uncertainty`` and
    ``domain``, the folder gains ``domain.npz`` and ``calibration.png``. The split is re-derived from the card
    (``extra_label_rows``) and checked against its ``test_names``.
    """
    import shutil
    import tempfile

    from models.artifacts import CARD_FILE, library_versions, load_model
    from models.calibration import calibrate_model
    from models.plots import calibration_plot
    from models.uncertainty import DOMAIN_FILE

    loaded = load_model(args.model, device="cpu")
    card = loaded.card
    data, train = _card_data(card)
    g, y = data["grids"], data["y"]
    described = loaded.descriptors(g, data["density"])
    split_descriptors = None if described is None else {"train": described[train], "val": described[data["val"]],
                                                        "test": described[data["test"]]}
    blocks = None if loaded.trees is None else crystal_blocks(data, loaded.trees.features)
    tree_rows = None if loaded.trees is None else {
        split: loaded.trees.features_of(g[data[split]], data["density"][data[split]],
                                        None if blocks is None else {k: v[data[split]] for k, v in blocks.items()})
        for split in ("val", "test")}
    calibration = calibrate_model(loaded.model, loaded.standardizer, train_x=g[train], train_y=y[train],
                                  train_names=[data["names"][i] for i in train], val_x=g[data["val"]],
                                  val_y=y[data["val"]], test_x=g[data["test"]], test_y=y[data["test"]],
                                  descriptors=split_descriptors, trees=loaded.trees, tree_rows=tree_rows)
    fields = calibration.card_fields()
    targets = [t.model_copy(update={"gas": "CH4", "temperature_k": 298.0, "pressure_bar": 5.8}) for t in card.targets]
    new_card = card.model_copy(update={"version": args.version, "targets": targets, **fields,
                                       "library_versions": library_versions()})
    out = Path(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model"
        shutil.copytree(out, staged)
        calibration.domain.save(staged / DOMAIN_FILE)
        coverage = (fields["uncertainty"].get("test_coverage") or [None])[0]
        calibration_plot(fields["uncertainty"]["curve"], staged / "calibration.png", unit=UNIT, coverage=coverage,
                         title=f"{card.name}:{args.version}, test split (n={len(data['test'])})")
        (staged / CARD_FILE).write_text(new_card.model_dump_json(indent=2) + "\n", encoding="utf-8")
        load_model(staged, device="cpu")  # verifies the re-released folder
        shutil.rmtree(out)
        shutil.copytree(staged, out)
    print(json.dumps({"uncertainty": {k: v for k, v in fields["uncertainty"].items() if k != "curve"},
                      "domain": fields["domain"]}, indent=1, default=float))


def cmd_compare(args: argparse.Namespace) -> None:
    """Every baseline against the shipped model on the shipped model's own split (same labels, same test set).

    Training sizes ``--sizes`` (subsets of the model's training pool, seeds ``--seeds``; "all" = the pool plus
    the validation split, which tree models do not need), 95 % CIs from 10,000 bootstrap resamples of the test
    set, R² and MAE averaged over the seeds. Writes ``<runs>/compare.json`` and prints a Markdown table.
    """
    from models.artifacts import load_model
    from models.metrics import paired_difference, regression_metrics, seed_mean_metrics

    loaded = load_model(args.model, device="cpu")
    card = loaded.card
    data, _ = _card_data(card, require_test_names=True)
    test = data["test"]
    from models.training import member_outputs_grids

    _, fingerprints = member_outputs_grids(loaded.model, loaded.standardizer, data["grids"],
                                           descriptors=loaded.descriptors(data["grids"], data["density"]))
    features = _baseline_features(data)
    features["Extra Trees, RetNet fingerprints + histogram + geometric + density"] = (
        "et", np.column_stack([fingerprints, features["Extra Trees, histogram + geometric + density"][1]]))
    y = data["y"]
    rows: list[dict[str, Any]] = []
    full_size: dict[str, np.ndarray] = {}  # each baseline's test predictions with every label
    stacked = {k for k in features if "RetNet fingerprints" in k}
    for label, (kind, x) in features.items():
        # the fingerprints come from a network trained on the whole pool: on a subset they would leak its labels
        for size in (["all"] if label in stacked else args.sizes):
            seeds = [0] if size == "all" else args.seeds
            preds, n_train = [], 0
            for seed in seeds:
                train = np.concatenate([data["pool"], data["val"]]) if size == "all" else \
                    train_subset(data["pool"], size, seed)
                n_train = len(train)
                model = _baseline_model(kind, seed, args.jobs).fit(x[train], y[train])
                preds.append(model.predict(x[test]))
            m = seed_mean_metrics(y[test], np.array(preds), n_boot=10000, seed=0) if len(preds) > 1 else \
                regression_metrics(y[test], preds[0], n_boot=10000, seed=0)
            rows.append({"model": label, "size": str(size), "n_train": n_train, "seeds": len(seeds),
                         **_r2_mae(m)})
            if size == "all":
                full_size[label] = preds[0]
            print(f"{label:70s} {size:>4} R2 {rows[-1]['r2']['value']:.3f} MAE {rows[-1]['mae']['value']:.3f}",
                  flush=True)
    rows += _retnet_curve_rows(args, card, data)
    if args.small_label is not None:  # `ensembles --hybrid --out` on the same split: the shipped form's curve
        for r in json.loads(args.small_label.read_text())["rows"]:
            if "hybrid" in r and r["variant"] == SMALL_LABEL_RECIPE:
                rows.append({"model": HYBRID_CURVE, "size": r["size"], "n_train": int(r["size"]),
                             "seeds": r["subsets"], "members": r["members"],
                             **{k: r["hybrid"][k] for k in ("r2", "mae")}})
    blocks = {k: v[test] for k, v in (crystal_blocks(data, loaded.crystal_blocks) or {}).items()}
    shipped_pred = loaded.predict(data["grids"][test], densities_g_cm3=data["density"][test],
                                  crystal_blocks=blocks)[:, 0]
    if loaded.trees is not None:  # a hybrid: its network alone too
        network_pred = loaded.predict(data["grids"][test], densities_g_cm3=data["density"][test],
                                      network_only=True)[:, 0]
        network = regression_metrics(y[test], network_pred, n_boot=10000, seed=0)
        rows.append({"model": f"{card.ref}'s network alone (RetNet ensemble)", "size": "all",
                     "n_train": card.training_data.get("n_train"), "seeds": card.ensemble_size,
                     **_r2_mae(network)})
    shipped = regression_metrics(y[test], shipped_pred, n_boot=10000, seed=0)
    kind = "RetNet ensemble" + (" + trees" if loaded.trees is not None else "")
    # paired bootstrap: the shipped model minus each baseline, both scored on every resample of the test set
    minus = {label: _r2_mae(paired_difference(y[test], [shipped_pred], [pred])) for label, pred in full_size.items()}
    rows.append({"model": f"shipped {card.ref} ({kind})", "size": "all",
                 "n_train": card.training_data.get("n_train"), "seeds": card.ensemble_size,
                 **_r2_mae(shipped),
                 "minus_baseline": minus})
    for label, d in minus.items():
        print(f"shipped minus {label}: R2 {_ci(d['r2'])} MAE {_ci(d['mae'])}", flush=True)
    save_json(args.runs / "compare.json", {"model": card.ref, "n_test": len(test), "rows": rows})
    _compare_plot(rows, args.runs / "learning_curves.png")
    print("\n| model | train size | seeds | R² [95 % CI] | MAE mol/kg [95 % CI] |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['n_train']} | {r['seeds']} | {_ci(r['r2'])} | {_ci(r['mae'])} |")


def cmd_versus(args: argparse.Namespace) -> None:
    """A shipped model against an earlier release (``--earlier``, e.g. a ``git archive`` of its folder) on the
    shipped model's test structures that the earlier one never used (neither its training nor its validation
    split: splits shift a little as labels grow). Both are scored on the same structures with 10,000 bootstrap
    resamples, and their paired difference (shipped − earlier) on every resample."""
    from models.artifacts import load_model
    from models.metrics import paired_difference, regression_metrics

    loaded, earlier = load_model(args.model, device="cpu"), load_model(args.earlier, device="cpu")
    for field in ("voxel_params", "targets", "primary_output"):
        if getattr(earlier.card, field) != getattr(loaded.card, field):
            raise SystemExit(f"{earlier.ref} and {loaded.ref} differ in {field}: not comparable on the same grids")
    data, _ = _card_data(loaded.card, require_test_names=True)
    earlier_data, earlier_train = _card_data(earlier.card, require_test_names=True)
    seen = {earlier_data["names"][i] for i in np.concatenate([earlier_train, earlier_data["val"]])}
    held = np.array([i for i in data["test"] if data["names"][i] not in seen], dtype=np.int64)
    if len(held) < 2:
        raise SystemExit(f"{len(held)} of {loaded.ref}'s test structures are new to {earlier.ref}: nothing to compare")
    grids, density, y = data["grids"][held], data["density"][held], data["y"][held]
    models = {"shipped": loaded, "earlier": earlier}
    preds = {role: m.predict(grids, densities_g_cm3=density, crystal_blocks={
        k: v[held] for k, v in (crystal_blocks(data, m.crystal_blocks) or {}).items()})[:, 0]
        for role, m in models.items()}
    scores = {role: {"model": m.ref, **_r2_mae(regression_metrics(y, preds[role], n_boot=10000, seed=0))}
              for role, m in models.items()}
    diff = paired_difference(y, [preds["shipped"]], [preds["earlier"]], n_boot=10000, seed=0)
    out = {"n_test": len(data["test"]), "n_compared": len(held),
           "excluded": f"{len(data['test']) - len(held)} test structures of {loaded.ref} that {earlier.ref} "
                       "trained or was validated on", "scores": scores,
           "minus_earlier": _r2_mae(diff)}
    for s in scores.values():
        print(f"{s['model']:16s} on {len(held)} structures: R2 {_ci(s['r2'])}  MAE {_ci(s['mae'])}", flush=True)
    print(f"{loaded.ref} minus {earlier.ref}: R2 {_ci(out['minus_earlier']['r2'])}  "
          f"MAE {_ci(out['minus_earlier']['mae'])}", flush=True)
    if args.out:
        save_json(args.out, out)


def _baseline_features(data: dict[str, Any]) -> dict[str, tuple[str, np.ndarray]]:
    """The issue's baselines: {label: (model kind, feature rows of every structure)}. Features: the 14-number
    energy histogram of our own grids, the 8 Zeo++ descriptors of the core-mof package, the crystal density."""
    props = coremof_properties().loc[data["names"]]
    geometric = props[GEOMETRIC_DESCRIPTORS].to_numpy(dtype=np.float64)
    density = data["density"]  # g/cm³ from each CIF (the core-mof column "cm3_g" holds the same density)
    histogram = energy_histogram(data["grids"])
    everything = np.column_stack([histogram, geometric, density])
    return {"RF, geometric descriptors": ("rf", geometric), "RF, energy histogram": ("rf", histogram),
            "RF, histogram + geometric + density": ("rf", everything),
            "Extra Trees, histogram + geometric + density": ("et", everything),
            "Gradient boosting, histogram + geometric + density": ("hgb", everything)}


def _baseline_model(kind: str, seed: int, jobs: int = 1) -> Any:
    """An unfitted baseline regressor: "rf" / "et" (500 trees) or "hgb"."""
    from sklearn.ensemble import ExtraTreesRegressor, HistGradientBoostingRegressor, RandomForestRegressor

    if kind == "hgb":
        return HistGradientBoostingRegressor(random_state=seed)
    forest = RandomForestRegressor if kind == "rf" else ExtraTreesRegressor
    return forest(n_estimators=500, random_state=seed, n_jobs=jobs)


#: Learning-curve label of the shipped form: RetNet ensembles blended with trees (`ensembles --hybrid` below full size).
HYBRID_CURVE = "RetNet ensemble + trees (shipped form)"
#: The small-label recipe whose `ensembles --hybrid` rows extend the shipped form's curve (clip 5 + 2 copies).
SMALL_LABEL_RECIPE = "retnet_finetune_clip5_vib2_desc-rho_none"


def _compare_plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Test R² against training size for every model of ``compare`` with several sizes (the shipped model joins
    its variant's curve at full size)."""
    from models.plots import learning_curve_plot

    curves: dict[str, list[tuple[int, float, float, float]]] = {}
    for r in rows:
        label = r["model"]
        if r["model"].startswith("shipped "):
            label = HYBRID_CURVE if "trees" in r["model"] else "RetNet + density (shipped variant)"
        elif r["model"].startswith("RetNet (") or r["model"].endswith("network alone (RetNet ensemble)"):
            label = "RetNet + density (shipped variant)"
        curves.setdefault(label, []).append((int(r["n_train"]), r["r2"]["value"], r["r2"]["ci_low"],
                                             r["r2"]["ci_high"]))
    learning_curve_plot({k: sorted(v) for k, v in curves.items() if len(v) > 1}, path)


def _retnet_curve_rows(args: argparse.Namespace, card: Any, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The shipped variant's runs at the smaller sizes of ``--sizes`` (from ``--runs``), seed means with CIs.

    A run counts when it was trained as the shipped variant (its tag without the seed and size) on this test set.
    """
    from models.metrics import seed_mean_metrics

    member = str(card.training_config.get("run") or "").split("+")[0]
    variant = re.sub(r"_(all|\d+)$", "", member)
    test_names = [data["names"][i] for i in data["test"]]
    y = data["y"][data["test"]]
    out = []
    for size in [s for s in args.sizes if s != "all"]:
        runs = [r for r in _runs(args) if re.sub(r"_seed\d+", "", r.get("tag", "")) == f"{variant}_{size}"
                and r.get("test_names") == test_names]
        if not runs:
            continue
        m = seed_mean_metrics(y, np.array([r["test_pred"] for r in runs]), n_boot=10000, seed=0)
        out.append({"model": f"RetNet ({variant.removeprefix('retnet_')})", "size": str(size),
                    "n_train": runs[0]["size"], "seeds": len(runs),
                    **_r2_mae(m)})
        print(f"{out[-1]['model']:70s} {size:>4} R2 {out[-1]['r2']['value']:.3f} MAE {out[-1]['mae']['value']:.3f}",
              flush=True)
    return out


def cmd_ensembles(args: argparse.Namespace) -> None:
    """Small-label ensembles: for each variant and size, the members of each training subset (runs tagged
    ``_subset{S}``, one per ``--seed``) averaged into one prediction, then the seed mean over the subsets with its
    CI (as `compare` reports the baselines), beside the single runs (members whose seed equals their subset)."""
    from models.metrics import paired_difference, seed_mean_metrics

    data = dataset(extra_rows=args.extra_rows)
    baselines = _baseline_features(data) if args.hybrid else {}
    test_names = [data["names"][i] for i in data["test"]]
    y = data["y"][data["test"]]
    groups: dict[tuple[str, str], dict[int, dict[int, list[float]]]] = {}
    tags: dict[tuple[str, str, int, int], str] = {}
    for run in _runs(args):
        match = re.fullmatch(r"(retnet_.+?)(?:_seed(\d+))?_subset(\d+)_(\w+?)_(\d+|all)", run.get("tag", ""))
        if match is None or run.get("test_names") != test_names:
            continue
        variant, seed, subset, freeze, size = match.groups()
        groups.setdefault((f"{variant}_{freeze}", size), {}).setdefault(int(subset), {})[int(seed or 0)] = \
            run["test_pred"]
        tags[(f"{variant}_{freeze}", size, int(subset), int(seed or 0))] = run["tag"]
    rows = []
    for (variant, size), subsets in sorted(groups.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))):
        members = min(len(m) for m in subsets.values())
        if len(subsets) < 2 or members < 2:
            continue
        ensembles = [np.mean([m[k] for k in sorted(m)[:members]], axis=0) for _, m in sorted(subsets.items())]
        singles = [m[s] for s, m in sorted(subsets.items()) if s in m]
        row: dict[str, Any] = {"variant": variant, "size": size, "subsets": len(subsets), "members": members}
        variants = [("ensemble", ensembles), ("single", singles)]
        if args.hybrid:  # each subset's ensemble blended with Extra Trees fitted on the same subset
            member_tags = {s: [tags[(variant, size, s, k)] for k in sorted(m)[:members]]
                           for s, m in sorted(subsets.items())}
            hybrids, weights = _subset_hybrids(args, data, int(size), member_tags, args.hybrid_weight)
            variants.append(("hybrid", hybrids))
            row["hybrid_weights"] = weights
            row["baselines"], row["hybrid_minus_baseline"], row["ensemble_minus_baseline"] = {}, {}, {}
            for label, (kind, x) in baselines.items():  # the same subsets (seed s draws subset s, as `compare`)
                preds = []
                for s in sorted(subsets):
                    train = train_subset(data["pool"], size, s)
                    preds.append(_baseline_model(kind, s, args.jobs).fit(x[train], data["y"][train]).predict(
                        x[data["test"]]))
                m = seed_mean_metrics(y, np.array(preds), n_boot=10000, seed=0)
                row["baselines"][label] = _r2_mae(m)
                for key, ours in (("hybrid_minus_baseline", hybrids), ("ensemble_minus_baseline", ensembles)):
                    d = paired_difference(y, np.array(ours), np.array(preds), n_boot=10000, seed=0)
                    row[key][label] = _r2_mae(d)
        for key, preds in variants:
            m = seed_mean_metrics(y, np.array(preds), n_boot=10000, seed=0)
            row[key] = _r2_mae(m)
            row[key]["r2_per_subset"] = [float(seed_mean_metrics(y, np.array([p]), n_boot=10)["r2"].value)
                                         for p in preds]
        rows.append(row)
        print(f"{variant:50s} {size:>4}: {len(subsets)} subsets x {members} members: ensemble R2 "
              f"{_ci(row['ensemble']['r2'])} MAE {_ci(row['ensemble']['mae'])}; single runs R2 "
              f"{row['single']['r2']['value']:.3f} (per subset {row['ensemble']['r2_per_subset']})", flush=True)
        if "hybrid" in row:
            print(f"{'':50s} {size:>4}: + trees (network weights {row['hybrid_weights']}): R2 "
                  f"{_ci(row['hybrid']['r2'])} MAE {_ci(row['hybrid']['mae'])}", flush=True)
            for label, d in row["hybrid_minus_baseline"].items():
                print(f"{'':50s} {size:>4}:   minus {label}: R2 {_ci(d['r2'])} MAE {_ci(d['mae'])}", flush=True)
    if args.out:
        save_json(args.out, {"n_test": len(y), "rows": rows})


def _tree_features_option(p: argparse.ArgumentParser) -> None:
    from models.descriptors import DESCRIPTOR_WIDTHS
    from models.hybrid import TREE_FEATURES

    p.add_argument("--tree-features", nargs="+", default=list(TREE_FEATURES), choices=sorted(DESCRIPTOR_WIDTHS),
                   metavar="BLOCK", help="descriptor blocks the blend's trees read (models/descriptors.py; default: "
                                         f"{' '.join(TREE_FEATURES)})")


def _subset_hybrids(args: argparse.Namespace, data: dict[str, Any], size: int, member_tags: dict[int, list[str]],
                    weight: str) -> tuple[list[np.ndarray], list[float]]:
    """Test predictions of each subset's ensemble blended with trees fitted on that subset (models.hybrid), the
    network's weight fixed (``weight``, a number: no labels beyond the subset) or chosen on the validation split
    (``"validation"``); returns (predictions per subset, weights)."""
    from models.hybrid import HybridTrees, fit_hybrid, fit_trees, tree_features

    rows = tree_features(data["grids"], data["density"], args.tree_features, crystal_blocks(data, args.tree_features))
    preds, weights = [], []
    for subset, run_tags in member_tags.items():
        train = train_subset(data["pool"], size, subset)
        network = np.mean([_run_predictions(args, tag, data, np.concatenate([data["val"], data["test"]]))
                           for tag in run_tags], axis=0)
        network_val, network_test = network[:len(data["val"])], network[len(data["val"]):]
        if weight == "validation":
            hybrid, _ = fit_hybrid(rows, data["y"], train, data["val"], network_val, features=args.tree_features)
        else:
            hybrid = HybridTrees(fit_trees(rows[train], data["y"][train]), float(weight), tuple(args.tree_features))
        preds.append(hybrid.blend(network_test, rows[data["test"]]))
        weights.append(hybrid.weight)
    return preds, weights


def _run_predictions(args: argparse.Namespace, tag: str, data: dict[str, Any], rows: np.ndarray) -> np.ndarray:
    """One saved run's predictions (mol/kg) of the structures ``rows``."""
    from models.descriptors import DescriptorSpec
    from models.training import predict_grids
    from models.transforms import Standardizer

    model, checkpoint = _load_run(args, tag)
    spec = None if not checkpoint.get("descriptors") else DescriptorSpec.from_dict(checkpoint["descriptors"])
    described = None if spec is None else spec.compute(data["grids"][rows], data["density"][rows])
    return predict_grids(model, Standardizer.from_dict(checkpoint["standardizer"]), data["grids"][rows],
                         descriptors=described)[:, 0]


def _load_run(args: argparse.Namespace, tag: str) -> tuple[Any, dict[str, Any]]:
    """(the one-output RetNet of a saved run, in eval mode; its checkpoint: standardizer, descriptors, ...)."""
    import torch

    from models.retnet import RetNet

    checkpoint = torch.load(args.runs / tag / "checkpoint.pt", weights_only=False)
    spec = checkpoint.get("descriptors")
    model = RetNet(n_outputs=1, n_descriptors=len(spec["mean"]) if spec else 0)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


def _metric_json(metric: Any) -> dict[str, float]:
    return {k: float(getattr(metric, k)) for k in ("value", "ci_low", "ci_high")}


def _r2_mae(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The R² and MAE of a ``regression_metrics``-like dict, as JSON (value and CI)."""
    return {k: _metric_json(v) for k, v in metrics.items() if k in ("r2", "mae")}


def _ci(metric: dict[str, float]) -> str:
    return f"{metric['value']:.3f} [{metric['ci_low']:.3f}, {metric['ci_high']:.3f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path.home() / "retnet-runs" / "ch4")
    parser.add_argument("--extra-rows", type=int, default=None,
                        help="use only the first N rows of the extra labels file (default: all)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); two 1-thread stages side by side "
                             "use a 2-core machine better than one 2-thread stage")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("baselines")
    p.add_argument("--sizes", nargs="+", default=["50", "100", "200", "all"])
    p.add_argument("--jobs", type=int, default=1)
    p.set_defaults(func=cmd_baselines)
    p = sub.add_parser("scratch")
    p.add_argument("--sizes", nargs="+", default=["all"])
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--translate", action="store_true",
                   help="also augment with random periodic translations (exact for any cell; not in the thesis)")
    p.set_defaults(func=cmd_scratch)
    p.add_argument("--vibration-copies", type=int, default=0, metavar="K",
                   help="vibration augmentation: K jittered copies per training structure (models.vibration)")
    p.add_argument("--vibration-amplitude", type=float, default=None, metavar="Å",
                   help="RMS displacement per axis (default: models.vibration.DEFAULT_AMPLITUDE)")

    p.add_argument("--descriptors", nargs="*", default=[], choices=["log_density", "energy_histogram"],
                   help="exact crystal descriptors read beside the grid (models/descriptors.py)")
    p.add_argument("--subset-by-seed", action="store_true",
                   help="smaller training sizes: the subset drawn with --seed (as `compare` draws the baselines')")

    p = sub.add_parser("pretrain")
    p.add_argument("--limit", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--targets", choices=["geometric", "geometric+energy", "geometric+widom"], default="geometric",
                   help="geometric: the Zeo++ descriptors; +energy: the grid's energy histogram; +widom: the CH4 "
                        "Henry coefficient and heat of adsorption at infinite dilution (scripts/widom_targets.py)")
    p.add_argument("--log-targets", action="store_true", help="log1p of the heavy-tailed descriptors")
    p.add_argument("--name", default="pretrained", help="run folder of the backbone")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_pretrain)
    p = sub.add_parser("finetune")
    p.add_argument("--sizes", nargs="+", default=["all"])
    p.add_argument("--freeze", nargs="+", default=["none"], choices=["none", "conv", "all-but-output"])
    p.add_argument("--base", default="pretrained", help="backbone run folder (from `pretrain --name`)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (thesis: 1e-3)")
    p.add_argument("--input-clip", type=float, default=None, metavar="B",
                   help="clip Boltzmann factors at B instead of the backbone's clip (100) while fine-tuning")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--translate", action="store_true",
                   help="also augment with random periodic translations (exact for any cell; not in the thesis)")
    p.set_defaults(func=cmd_finetune)
    p.add_argument("--vibration-copies", type=int, default=0, metavar="K",
                   help="vibration augmentation: K jittered copies per training structure (models.vibration)")
    p.add_argument("--vibration-amplitude", type=float, default=None, metavar="Å",
                   help="RMS displacement per axis (default: models.vibration.DEFAULT_AMPLITUDE)")

    p.add_argument("--descriptors", nargs="*", default=[], choices=["log_density", "energy_histogram"],
                   help="exact crystal descriptors read beside the grid (models/descriptors.py)")
    p.add_argument("--subset-by-seed", action="store_true",
                   help="smaller training sizes: the subset drawn with --seed (as `compare` draws the baselines')")
    p.add_argument("--subset-seed", type=int, default=None, metavar="S",
                   help="smaller training sizes: the subset drawn with S whatever --seed (an ensemble member of "
                        "subset S: --seed sets only its initialisation and batches)")

    p = sub.add_parser("ship")
    p.add_argument("--version", default="1")
    p.add_argument("--tag", default=None, help="ship this run instead of the best by validation R²")
    p.add_argument("--ensemble", action="store_true",
                   help="average the selected run with its re-runs under other seeds (finetune --seed N)")
    p.set_defaults(func=cmd_ship)
    p = sub.add_parser("calibrate", help="uncertainty calibration + applicability domain of a shipped model")
    p.add_argument("--model", type=Path, default=ROOT / "models" / "shipped" / "retnet-ch4")
    p.add_argument("--version", required=True, help="version of the re-released card")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("hybrid", help="blend a shipped network with Extra Trees (models/hybrid.py), re-calibrate")
    p.add_argument("--model", type=Path, default=ROOT / "models" / "shipped" / "retnet-ch4")
    p.add_argument("--version", required=True, help="version of the re-released card")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--reblend", action="store_true", help="a hybrid model: replace its trees (same networks)")
    _tree_features_option(p)
    p.set_defaults(func=cmd_hybrid)

    p = sub.add_parser("compare", help="every baseline against the shipped model on its own split")
    p.add_argument("--model", type=Path, default=ROOT / "models" / "shipped" / "retnet-ch4")
    p.add_argument("--sizes", nargs="+", default=["50", "100", "200", "all"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--small-label", type=Path, default=None, metavar="JSON",
                   help="`ensembles --hybrid --out` results: the shipped form's learning curve below full size")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("versus", help="the shipped model against an earlier release on held-out structures")
    p.add_argument("--model", type=Path, default=ROOT / "models" / "shipped" / "retnet-ch4")
    p.add_argument("--earlier", type=Path, required=True, metavar="DIR", help="the earlier release's model folder")
    p.add_argument("--out", type=Path, default=None, help="JSON of the scores")
    p.set_defaults(func=cmd_versus)

    p = sub.add_parser("ensembles", help="small-label ensembles: members of each subset (finetune --subset-seed)")
    p.add_argument("--out", type=Path, default=None, help="JSON of the rows")
    p.add_argument("--hybrid", action="store_true",
                   help="also each subset's ensemble blended with Extra Trees fitted on the same subset")
    p.add_argument("--hybrid-weight", default="0.5", metavar="W|validation",
                   help="the network's weight in the blend: a number (default 0.5: the subset's labels only, as "
                        "the baselines get) or 'validation' (chosen on the validation structures)")
    p.add_argument("--jobs", type=int, default=1, help="processes of the baselines' trees")
    _tree_features_option(p)
    p.set_defaults(func=cmd_ensembles)

    p = sub.add_parser("report")
    p.set_defaults(func=cmd_report)
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.func(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
