"""Benchmark: ensemble inference, members one after another (legacy) against the fused pass.

A hybrid model (RetNet + trees, :mod:`models.hybrid`) is also timed without its trees, in the same run, for the
cost of the blend (``hybrid_time_ratio``: the fused hybrid's time per call over the fused network's alone).

Loads a model with :func:`models.artifacts.load_model` and, for each thread count and batch size, times
``LoadedModel.predict`` (standardization, forward pass under ``torch.inference_mode``, float64 result) on
random but realistic grids, first with ``RetNetEnsemble.fused = False`` (the members one after another),
then with the fused pass. Each path gets warm-up calls, then is timed for ``--seconds`` in ``--rounds``
alternating rounds; the figure is the median call, in wall-clock time (grids/s) and in process CPU time
(grids/CPU-s: less sensitive to other load on the machine; with n threads it sums their CPU time). It prints
a markdown table of both, the speed-up (wall clock) and the largest difference between the paths' predictions.

The grids are Boltzmann factors exp(-V / 298 K) of a smooth periodic random potential V: framework-like
regions where the factor is ~0, pores around 1 and a few binding pockets far above the standardizer's clip.

Usage::

    python -m bench.inference [--model models/shipped/retnet-ch4] [--batches 1,16,64] [--seconds 5]
                              [--threads 1,2] [--interop-threads N] [--fused-chunk N] [--device cpu]
                              [--json bench/results/inference.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.artifacts import LoadedModel, load_model  # noqa: E402
from models.retnet import INPUT_SIZE, RetNetEnsemble  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "shipped" / "retnet-ch4"
#: Energy scale and offset (K) of the synthetic potential, chosen so that the clipped grids have about the
#: shipped standardizer's mean (1.27 vs 1.18); T = 298 K as in the shipped voxel parameters.
POTENTIAL_SCALE_K = 700.0
POTENTIAL_OFFSET_K = 700.0
TEMPERATURE_K = 298.0


def synthetic_grids(n: int, *, size: int = INPUT_SIZE, seed: int = 0) -> np.ndarray:
    """Boltzmann-factor grids exp(-V/T) of smooth periodic random potentials, float32 (n, size, size, size).

    Parameters
    ----------
    n : int
        Number of grids.
    size : int
        Points per axis.
    seed : int
        Seed of the white noise that is low-pass filtered (periodically, in Fourier space) into V.
    """
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, size, size, size))
    k = np.fft.fftfreq(size)
    k2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2
    field = np.fft.ifftn(np.fft.fftn(noise, axes=(1, 2, 3)) * np.exp(-k2 / (2 * 0.08**2)), axes=(1, 2, 3)).real
    field /= field.std(axis=(1, 2, 3), keepdims=True)
    potential = POTENTIAL_SCALE_K * field + POTENTIAL_OFFSET_K
    return np.exp(-np.clip(potential, -20 * TEMPERATURE_K, None) / TEMPERATURE_K).astype(np.float32)


def _call_times(fn: Callable[[], object], seconds: float, min_calls: int) -> list[tuple[float, float]]:
    """(wall, process CPU) seconds of repeated calls of ``fn`` for about ``seconds`` (at least ``min_calls``)."""
    times: list[tuple[float, float]] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_calls or time.perf_counter() < deadline:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def _set_fused(model: LoadedModel, fused: bool) -> None:
    if isinstance(model.model, RetNetEnsemble):
        model.model.fused = fused


def synthetic_densities(n: int, seed: int = 0) -> np.ndarray:
    """Crystal densities, g/cm³, log-uniform over 0.3–2.5 (CoRE MOF's range), for a model that reads them."""
    return np.exp(np.random.default_rng(seed).uniform(np.log(0.3), np.log(2.5), n))


def synthetic_crystal_blocks(model: LoadedModel, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The crystal blocks a model's trees read, synthetic (none for most models): ``ch4_widom`` with log10 K_H
    uniform over −2…1 (mol/(kg·bar)) and Q_st⁰ over 8…25 kJ/mol, CoRE MOF's usual range."""
    rng = np.random.default_rng(seed + 1)
    return {b: np.column_stack([rng.uniform(-2.0, 1.0, n), rng.uniform(8.0, 25.0, n)]) for b in model.crystal_blocks}


def measure(
    model: LoadedModel, grids: np.ndarray, *, seconds: float, rounds: int, warmup: int,
    densities: np.ndarray | None = None, crystal_blocks: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Time legacy and fused prediction of ``grids`` as one batch; returns grids/s, speed-up and difference.

    ``densities`` (g/cm³) are passed to a model that reads the crystal density (its descriptors are computed in
    every call, as serving does).
    """
    batch = len(grids)
    predictions: dict[bool, np.ndarray] = {}
    for fused in (False, True):
        _set_fused(model, fused)
        for _ in range(warmup):
            predictions[fused] = model.predict(grids, batch_size=batch, densities_g_cm3=densities,
                                               crystal_blocks=crystal_blocks)
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(rounds):
        for fused in (False, True):
            _set_fused(model, fused)
            times[fused] += _call_times(
                lambda: model.predict(grids, batch_size=batch, densities_g_cm3=densities,
                                      crystal_blocks=crystal_blocks), seconds / rounds, 1)
    _set_fused(model, True)
    wall = {path: statistics.median(t[0] for t in calls) for path, calls in times.items()}
    cpu = {path: statistics.median(t[1] for t in calls) for path, calls in times.items()}
    hybrid: dict[str, Any] = {}
    if model.trees is not None:  # a hybrid model: the fused network alone, timed in the same run
        def network() -> object:
            return model.predict(grids, batch_size=batch, densities_g_cm3=densities, network_only=True)

        for _ in range(warmup):
            network()
        alone = statistics.median(t[0] for t in _call_times(network, seconds / 2, 1))
        hybrid = {"network_only_grids_per_s": batch / alone, "hybrid_time_ratio": wall[True] / alone}
    return {**hybrid,
        "batch": batch,
        "legacy_grids_per_s": batch / wall[False],
        "fused_grids_per_s": batch / wall[True],
        "speedup": wall[False] / wall[True],
        "legacy_grids_per_cpu_s": batch / cpu[False],
        "fused_grids_per_cpu_s": batch / cpu[True],
        "legacy_calls": len(times[False]),
        "fused_calls": len(times[True]),
        "max_abs_diff": float(np.abs(predictions[True] - predictions[False]).max()),
    }


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The results as a markdown table."""
    lines = [
        "| threads | batch | legacy grids/s | fused grids/s | speed-up | legacy grids/CPU-s | fused grids/CPU-s "
        "| max abs diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if rows and "hybrid_time_ratio" in rows[0]:
        lines[0] += " network alone grids/s | hybrid time / network time |"
        lines[1] += "---|---|"
    for r in rows:
        extra = (f" {r['network_only_grids_per_s']:.1f} | {r['hybrid_time_ratio']:.2f}× |"
                 if "hybrid_time_ratio" in r else "")
        lines.append(
            f"| {r['threads']} | {r['batch']} | {r['legacy_grids_per_s']:.1f} | {r['fused_grids_per_s']:.1f} "
            f"| {r['speedup']:.2f}× | {r['legacy_grids_per_cpu_s']:.1f} | {r['fused_grids_per_cpu_s']:.1f} "
            f"| {r['max_abs_diff']:.1e} |" + extra
        )
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model folder or archive")
    parser.add_argument("--batches", type=_int_list, default=[1, 16, 64], help="batch sizes, e.g. 1,16,64")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per path and measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternating legacy/fused rounds per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per path first")
    parser.add_argument(
        "--threads", type=_int_list, default=None, help="torch.set_num_threads values, e.g. 1,2 (default: torch's)"
    )
    parser.add_argument("--interop-threads", type=int, default=None, help="torch.set_num_interop_threads")
    parser.add_argument(
        "--fused-chunk", type=int, default=None, help="RetNetEnsemble.fused_chunk (default: the model's default)"
    )
    parser.add_argument("--device", default="cpu", help="device to load the model on (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic grids")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.interop_threads is not None:
        torch.set_num_interop_threads(args.interop_threads)
    model = load_model(args.model, device=args.device)
    if not isinstance(model.model, RetNetEnsemble):
        print(f"note: {model.ref} is a single RetNet; both paths are the same", file=sys.stderr)
    elif args.fused_chunk is not None:
        model.model.fused_chunk = args.fused_chunk
    grids = synthetic_grids(max(args.batches), seed=args.seed)
    densities = synthetic_densities(len(grids), seed=args.seed) if model.needs_density else None
    blocks = synthetic_crystal_blocks(model, len(grids), seed=args.seed)
    rows = []
    for threads in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        for batch in args.batches:
            row = measure(model, grids[:batch], seconds=args.seconds, rounds=args.rounds, warmup=args.warmup,
                          densities=None if densities is None else densities[:batch],
                          crystal_blocks={b: v[:batch] for b, v in blocks.items()})
            rows.append({"threads": threads, **row})
            print(f"threads {threads} batch {batch}: {row['speedup']:.2f}x", file=sys.stderr, flush=True)
    print(f"{model.ref} on {args.device}, interop threads {torch.get_num_interop_threads()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}\n")
    print(markdown_table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "model": model.ref,
            "device": args.device,
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "interop_threads": torch.get_num_interop_threads(),
            "seconds": args.seconds,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "seed": args.seed,
            "fused_chunk": args.fused_chunk,
        }
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
