"""Reproduce the shipped CH4 isotherm model ``retnet-ch4-isotherm``: split, heads, calibration, baselines, card.

Usage::

    python scripts/voxelize_coremof.py --labelled                   # grids of the labelled structures
    python scripts/widom_targets.py --block --jobs 2                # the ch4_widom crystal blocks the trees read
    python scripts/isotherm_model.py train --version 4 --base models/shipped/retnet-ch4 --trees   # fit, evaluate, ship
    python scripts/voxelize_coremof.py --all                        # grids of every CoRE MOF 2019 structure
    python scripts/design_library.py --model models/shipped/retnet-ch4-isotherm   # its library (POST /design)

The model is the shipped ``retnet-ch4`` ensemble (frozen: its convolutions and fingerprint heads) with one
monotone isotherm head per member (:class:`models.isotherm.IsothermEnsemble`), fitted on a masked loss to every
labelled point of ``models/data/ch4_isotherms_raspa2.csv`` (1, 5.8, 35, 65 bar, 298 K) and to the 5.8 bar labels
of the structures whose curve is not simulated yet. With ``--trees`` (since v4) the heads' curve is averaged with
monotone curve trees (:class:`models.curve_trees.CurveTrees`: Extra Trees on the 5.8 bar uptake, the 1 bar
fraction of it and the steps to 35 and 65 bar, on :data:`models.hybrid.TREE_FEATURES`), at one network weight
chosen on the 5-fold out-of-fold curves of the training + validation structures.

Split: the one of ``scripts/ch4_model.py`` on all current labels (20 % test, 10 % validation, by seeded
permutation / name hash), minus any test structure the backbone was trained on (the backbone's own split,
re-derived from its card). The test split chooses nothing. σ is calibrated per pressure on 5-fold out-of-fold
curves of the training and validation structures (the validation split alone holds too few complete curves); at
5.8 bar only on structures the backbone did not train on (its own training labels' errors are optimistic).
Baselines: one Random Forest per pressure (energy histogram + Zeo++ geometry + density, 500 trees) trained on
the same training + validation structures. 95 % CIs: 10,000 bootstrap resamples of the test structures; the
model minus the RFs (and minus ``--compare``) by paired bootstrap on the same resamples.
Writes ``bench/results/isotherm_model_v<version>.json`` and the model folder.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import ch4_model  # noqa: E402

from models.datasets import GEOMETRIC_DESCRIPTORS, coremof_properties  # noqa: E402
from models.gcmc import ISOTHERM_PRESSURES_BAR, LABEL_STATUSES  # noqa: E402

ISOTHERM_LABELS = ROOT / "models" / "data" / "ch4_isotherms_raspa2.csv"
MODEL_NAME = "retnet-ch4-isotherm"
OUT_DIR = ROOT / "models" / "shipped" / MODEL_NAME
#: Folds of the out-of-fold curves that calibrate σ (and choose a hybrid's weight).
OUT_OF_FOLD_FOLDS = 5


def isotherm_matrix(names: list[str], pressures: tuple[float, ...] = ISOTHERM_PRESSURES_BAR,
                    rows: int | None = None) -> np.ndarray:
    """(N, k) uptakes (mol/kg) of ``names`` at ``pressures`` from the isotherm labels (their first ``rows`` rows:
    the file grows); NaN where not labelled."""
    table = pd.read_csv(ISOTHERM_LABELS, nrows=rows)
    table = table[table["status"].isin(LABEL_STATUSES)].dropna(subset=["ch4_uptake_mol_kg"])
    out = np.full((len(names), len(pressures)), np.nan)
    index = {n: i for i, n in enumerate(names)}
    for row in table.itertuples():
        i = index.get(row.name)
        for j, p in enumerate(pressures):
            if i is not None and abs(float(row.pressure_bar) - p) < 1e-9:
                out[i, j] = float(row.ch4_uptake_mol_kg)
    return out


def _metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, Any] | None:
    from models.metrics import regression_metrics

    ok = np.isfinite(y)
    if ok.sum() < 3:
        return None
    m = regression_metrics(y[ok], pred[ok], n_boot=10000, seed=0)
    return {"n": int(ok.sum()), **{k: ch4_model._metric_json(m[k]) for k in ("r2", "mae", "rmse") if k in m}}


def _paired(y: np.ndarray, pred: np.ndarray, baseline: np.ndarray) -> dict[str, Any] | None:
    """R² and MAE of ``pred`` minus those of ``baseline`` on the labelled structures, paired bootstrap 95 % CI."""
    from models.metrics import paired_difference

    ok = np.isfinite(y) & np.isfinite(pred) & np.isfinite(baseline)
    if ok.sum() < 3:
        return None
    d = paired_difference(y[ok], pred[ok][None], baseline[ok][None], n_boot=10000, seed=0)
    return {k: ch4_model._metric_json(d[k]) for k in ("r2", "mae")}


def cmd_train(args: argparse.Namespace) -> None:
    import torch
    from sklearn.ensemble import RandomForestRegressor

    from models.artifacts import ModelCard, Target, library_versions, load_model, save_model, save_trees
    from models.curve_trees import CurveTrees, out_of_fold_curve_trees
    from models.hybrid import TREE_FEATURES, HybridTrees, choose_weight, tree_features
    from models.isotherm import IsothermEnsemble, deliverable_capacity
    from models.isotherm_training import (
        HeadFitConfig,
        fit_heads,
        fold_assignment,
        out_of_fold_curves,
        pressure_scales,
    )
    from models.plots import isotherm_plot
    from models.training import member_outputs_grids
    from models.trees import MIN_SAMPLES_LEAF, N_TREES
    from models.uncertainty import DOMAIN_FILE, calibrate_spread, coverage, fit_domain

    base = load_model(args.base, device="cpu")
    pressures = ISOTHERM_PRESSURES_BAR
    data = ch4_model.dataset(extra_rows=args.extra_rows)
    seen = ch4_model.dataset(extra_rows=base.card.training_data.get("extra_label_rows"))
    if sorted(seen["names"][i] for i in seen["test"]) != sorted(base.card.training_data.get("test_names", [])):
        raise SystemExit("the backbone's re-derived test split differs from its card's test_names")
    backbone_train = {seen["names"][i] for i in np.concatenate([seen["pool"], seen["val"]])}
    names = data["names"]
    test = np.array([i for i in data["test"] if names[i] not in backbone_train], dtype=int)
    val, train = data["val"], data["pool"]
    labels = isotherm_matrix(names, pressures, args.isotherm_rows)
    at_58 = pressures.index(5.8)
    labels[:, at_58] = np.where(np.isfinite(labels[:, at_58]), labels[:, at_58], data["y"])

    # a descriptor backbone (retnet-ch4:6 reads ln ρ) gets each structure's exact density, as serving does
    described = base.descriptors(data["grids"], data["density"])
    _, flat = member_outputs_grids(base.model, base.standardizer, data["grids"], descriptors=described)
    n_members = base.card.ensemble_size
    fps = flat.reshape(len(names), n_members, -1).transpose(1, 0, 2)  # (members, N, 20)
    model = IsothermEnsemble(copy.deepcopy(base.model), pressures).freeze_backbone()
    config = HeadFitConfig(epochs=args.epochs, seed=0)
    fit = fit_heads(model, fps[:, train], labels[train], fps[:, val], labels[val], config)
    epochs = int(np.median(fit.best_epochs))
    fit_rows = np.concatenate([train, val])
    folds = fold_assignment(len(fit_rows), OUT_OF_FOLD_FOLDS)  # the heads' and the trees' out-of-fold folds
    oof = out_of_fold_curves(model, fps[:, fit_rows], labels[fit_rows], epochs=epochs, config=config,
                             assignment=folds)
    # The backbone was fitted to the 5.8 bar labels of its own training structures: their out-of-fold errors at
    # 5.8 bar are optimistic (σ came out too small: 83 % test coverage), so that point is calibrated on the others.
    calibration_labels = labels[fit_rows].copy()
    calibration_labels[[names[i] in backbone_train for i in fit_rows], at_58] = np.nan
    model.eval()
    with torch.no_grad():
        members = model.curves_from_fingerprints(torch.as_tensor(fps, dtype=torch.float32)).double().numpy()
    network = members.mean(axis=0)
    hybrid = by_trees = None
    if args.trees:  # monotone curve trees beside the heads, blended at one weight chosen out of fold
        tree_rows = tree_features(data["grids"], data["density"], TREE_FEATURES,
                                  ch4_model.crystal_blocks(data, TREE_FEATURES))
        # the validation split holds too few complete curves to choose the weight on (as for σ): the heads' and
        # the trees' out-of-fold curves of the training + validation structures choose it, on the same points σ
        # is calibrated on; the trees then learn from all those structures, as their out-of-fold folds did
        oof_trees = out_of_fold_curve_trees(tree_rows[fit_rows], labels[fit_rows], at_58, folds, n_trees=N_TREES,
                                            min_samples_leaf=MIN_SAMPLES_LEAF, jobs=args.jobs)
        weight = choose_weight(calibration_labels, oof.mean(axis=0), oof_trees,
                               scales=pressure_scales(labels[fit_rows]))
        curve_trees = CurveTrees.fit(tree_rows[fit_rows], labels[fit_rows], at_58, n_trees=N_TREES,
                                     min_samples_leaf=MIN_SAMPLES_LEAF, jobs=args.jobs)
        hybrid = HybridTrees(curve_trees, weight, TREE_FEATURES)
        by_trees = hybrid.predict_trees(tree_rows)
        mean, spread_now = hybrid.combine_predictions(members, by_trees)
        oof_mean, oof_spread = hybrid.combine_predictions(oof, oof_trees)
    else:
        mean, spread_now = network, members.std(axis=0, ddof=1)
        oof_mean, oof_spread = oof.mean(axis=0), oof.std(axis=0, ddof=1)
    spread = calibrate_spread(calibration_labels, oof_mean, oof_spread)
    sigma = spread.sigma(spread_now)
    domain = fit_domain(flat[train], [names[i] for i in train], labels[train, at_58], flat[val])
    inside, _ = domain.assess(flat[test])

    props = coremof_properties().loc[names]
    features = np.column_stack([ch4_model.energy_histogram(data["grids"]),
                                props[GEOMETRIC_DESCRIPTORS].to_numpy(dtype=np.float64),
                                data["density"]])
    rf_pred = np.full((len(names), len(pressures)), np.nan)
    for j in range(len(pressures)):
        rows = fit_rows[np.isfinite(labels[fit_rows, j])]
        rf = RandomForestRegressor(n_estimators=500, random_state=0, n_jobs=args.jobs)
        rf_pred[:, j] = rf.fit(features[rows], labels[rows, j]).predict(features)

    y_test = labels[test]
    dc_true = deliverable_capacity(y_test, pressures)
    per_pressure = []
    for j, p in enumerate(pressures):
        per_pressure.append({"pressure_bar": p, "n_train": int(np.isfinite(labels[fit_rows, j]).sum()),
                             "retnet": _metrics(y_test[:, j], mean[test, j]),
                             "rf": _metrics(y_test[:, j], rf_pred[test, j]),
                             "coverage": coverage(y_test[:, j], mean[test, j], sigma[test, j])[0],
                             "minus_rf": _paired(y_test[:, j], mean[test, j], rf_pred[test, j]),
                             **({"network": _metrics(y_test[:, j], network[test, j]),
                                 "trees": _metrics(y_test[:, j], by_trees[test, j])} if by_trees is not None else {})})
    if args.compare is not None:  # an earlier model on exactly these test structures
        earlier = load_model(args.compare, device="cpu")
        before = earlier.predict(data["grids"][test], densities_g_cm3=data["density"][test])
        for j, row in enumerate(per_pressure):
            row["earlier"] = _metrics(y_test[:, j], before[:, j])
            row["minus_earlier"] = _paired(y_test[:, j], mean[test, j], before[:, j])
    dc_sigma = np.sqrt(sigma[test, pressures.index(65.0)] ** 2 + sigma[test, at_58] ** 2)
    result = {
        "model": f"{MODEL_NAME}:{args.version}", "backbone": base.card.ref, "n_test_structures": int(len(test)),
        "complete_curves": {"train": int(np.isfinite(labels[train]).all(axis=1).sum()),
                            "val": int(np.isfinite(labels[val]).all(axis=1).sum()),
                            "test": int(np.isfinite(labels[test]).all(axis=1).sum())},
        "per_pressure": per_pressure,
        "deliverable_capacity": {"retnet": _metrics(dc_true, deliverable_capacity(mean[test], pressures)),
                                 "rf": _metrics(dc_true, deliverable_capacity(rf_pred[test], pressures)),
                                 "minus_rf": _paired(dc_true, deliverable_capacity(mean[test], pressures),
                                                     deliverable_capacity(rf_pred[test], pressures)),
                                 **({"minus_earlier": _paired(dc_true, deliverable_capacity(mean[test], pressures),
                                                              deliverable_capacity(before, pressures))}
                                    if args.compare is not None else {}),
                                 "coverage": coverage(dc_true, deliverable_capacity(mean[test], pressures),
                                                      dc_sigma)[0],
                                 **({"network": _metrics(dc_true, deliverable_capacity(network[test], pressures)),
                                     "trees": _metrics(dc_true, deliverable_capacity(by_trees[test], pressures))}
                                    if by_trees is not None else {}),
                                 **({"earlier": _metrics(dc_true, deliverable_capacity(before, pressures))}
                                    if args.compare is not None else {})},
        "earlier_model": None if args.compare is None else earlier.ref,
        "in_domain_test": float(inside.mean()) if len(test) else None,
        "head_fit": {"best_epochs": fit.best_epochs, "oof_epochs": epochs},
        "trees": None if hybrid is None else {"features": list(TREE_FEATURES), "network_weight": hybrid.weight,
                                              "fitted_on": f"training + validation ({len(fit_rows)} structures)"},
        "calibration": spread.to_dict(),
    }
    ch4_model.save_json(ROOT / "bench" / "results" / f"isotherm_model_v{args.version}.json", result)

    targets = [Target(name=f"ch4_uptake_{p:g}bar", unit="mol/kg", property=f"CH4 uptake, 298 K, {p:g} bar",
                      gas="CH4", temperature_k=298.0, pressure_bar=p) for p in pressures]
    card = ModelCard(
        name=MODEL_NAME, version=args.version, architecture="RetNetIsotherm", targets=targets, primary_output=at_58,
        voxel_params=base.card.voxel_params, standardization=base.card.standardization,
        descriptors=base.card.descriptors,
        preliminary=result["complete_curves"]["train"] < 200,
        description=(f"CH4 isotherm (1, 5.8, 35, 65 bar, 298 K) from the frozen {base.card.ref} networks with one "
                     "monotone head per member (uptake non-decreasing in pressure by construction)"
                     + ("" if hybrid is None else f", averaged with monotone curve trees on {' + '.join(TREE_FEATURES)}"
                        f" (network weight {hybrid.weight:.2f}; models/curve_trees.py)")
                     + "; deliverable capacity = 65 bar - 5.8 bar uptake"),
        training_data={"source": "CoRE MOF 2019-ASR; RASPA2 GCMC labels, DESIGN.md §6 at four pressures "
                                 "(models/data/ch4_isotherms_raspa2.csv) and 5.8 bar (ch4_coremof2019_raspa2*.csv)",
                       "backbone": base.card.ref, "n_train": int(len(train)), "n_val": int(len(val)),
                       "extra_label_rows": args.extra_rows, "isotherm_label_rows": args.isotherm_rows,
                       "n_test": int(len(test)), "complete_curves": result["complete_curves"],
                       "trees": hybrid is not None,
                       "split": "scripts/ch4_model.py's split on all current labels, minus test structures the "
                                "backbone trained on", "test_names": [names[i] for i in test]},
        metrics={"test": {"per_pressure": per_pressure, "deliverable_capacity": result["deliverable_capacity"]}},
        training_config={"head_fit": {"epochs": args.epochs, "lr": config.lr, "weight_decay": config.weight_decay,
                                      "bootstrap": config.bootstrap}, "frozen": "backbone"},
        library_versions=library_versions(),
        uncertainty={**spread.to_dict(), "test_coverage": [r["coverage"] for r in per_pressure],
                     "fitted_on": "5-fold out-of-fold curves of the training + validation structures (at 5.8 bar "
                                  "only those the backbone did not train on)"},
        domain={**domain.card_summary(), "test_in_domain": result["in_domain_test"]},
    )
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model"
        examples = [i for i in test if np.isfinite(labels[i]).all()][:6]
        plot = Path(tmp) / "isotherms.png"
        isotherm_plot(pressures, [labels[i] for i in examples], [mean[i] for i in examples],
                      [sigma[i] for i in examples], [names[i] for i in examples], plot,
                      title=f"{MODEL_NAME}:{args.version}, test structures with a simulated curve")
        save_model(staged, model, card, extra_files={"isotherms.png": plot})
        domain.save(staged / DOMAIN_FILE)
        if hybrid is not None:
            save_trees(staged, hybrid, n_trees=N_TREES, min_samples_leaf=MIN_SAMPLES_LEAF,
                       fitted_on=f"the training + validation structures ({len(fit_rows)})",
                       weight_selection="lowest standardized squared error of the blend's 5-fold out-of-fold curves "
                                        "of the training + validation structures (the points σ is calibrated on)")
        load_model(staged, device="cpu")  # verifies the folder
        if args.out.exists():
            shutil.rmtree(args.out)
        shutil.copytree(staged, args.out)
    print(json.dumps({k: v for k, v in result.items() if k != "calibration"}, indent=1, default=float))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("train", help="fit the heads, evaluate against per-pressure RFs, ship the model")
    p.add_argument("--base", type=Path, required=True,
                   help="the backbone folder, e.g. models/shipped/retnet-ch4 (v6: reads ln ρ beside the grid; the "
                        "heads then see the density through its fingerprints); v2 used retnet-ch4:5: `git archive "
                        "c153b9e models/shipped/retnet-ch4 | tar -x -C /tmp/v5`")
    p.add_argument("--version", default="1")
    p.add_argument("--extra-rows", type=int, default=None, help="use the first N rows of the extra 5.8 bar labels")
    p.add_argument("--isotherm-rows", type=int, default=None, help="use the first N rows of the isotherm labels")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="model folder written (default: the shipped one)")
    p.add_argument("--compare", type=Path, default=None,
                   help="an earlier isotherm model folder, scored on the same test structures")
    p.add_argument("--epochs", type=int, default=4000)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--trees", action="store_true",
                   help="blend the heads with monotone curve trees (models/curve_trees.py) on the hybrid tree "
                        "features, fitted on training + validation, one network weight chosen on out-of-fold curves")
    p.set_defaults(func=cmd_train)
    args = parser.parse_args()
    args.func(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
