"""Train the shipped energy-grid generator (``models/generator/grid_vae.pt``) on every CoRE MOF 2019 grid.

Usage::

    python scripts/voxelize_coremof.py --all                 # grids (cached)
    python scripts/generator_model.py --epochs 8   # → models/generator/grid_vae.pt, bench/results/generator.json
    python scripts/generator_model.py --density-head --jobs 2   # its p(ln ρ | z), for predictors that read ρ,
                                                               # and every grid's code (library_codes.npz)

The VAE (:class:`models.generator.GridVAE`) learns log(1 + grid) of the default voxel parameters' grids (their
hash is stored with the generator and checked against a predictor's before use). 5 % of the structures (seeded)
are held out for the validation reconstruction error, compared with predicting the mean grid.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.datasets import default_cache_dir  # noqa: E402
from models.params import VoxelParams  # noqa: E402

OUT = ROOT / "models" / "generator" / "grid_vae.pt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--channels", type=int, nargs=3, default=(8, 16, 32), help="encoder channels (decoder mirrors)")
    parser.add_argument("--periodic", action="store_true", help="circular padding (the grid is periodic)")
    parser.add_argument("--out", type=Path, default=OUT, help="generator file (default: the shipped one)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N grids (a quick try)")
    parser.add_argument("--density-head", action="store_true",
                        help="keep the trained VAE; (re)fit only its density head p(ln ρ | z) (models.generator)")
    parser.add_argument("--jobs", type=int, default=1, help="processes parsing CIFs for the densities")
    args = parser.parse_args()
    if args.density_head:
        return fit_head(args)

    import torch

    from models.generator import (
        DEFAULT_CLIP,
        LIBRARY_CODES_FILE,
        GridVAE,
        fit_generator,
        generator_split,
        save_generator,
        to_generator_space,
    )

    torch.manual_seed(0)
    folder = default_cache_dir() / "voxels" / VoxelParams().params_hash()
    names = sorted(p.stem for p in folder.glob("*.npy"))[: args.limit]
    grids = np.stack([np.load(folder / f"{n}.npy") for n in names]).astype(np.float32)
    x = to_generator_space(grids, DEFAULT_CLIP).astype(np.float32)
    del grids
    train_idx, val_idx = generator_split(len(x))
    val, train = x[val_idx], x[train_idx]
    start = time.time()
    vae = GridVAE(args.latent, tuple(args.channels), periodic=args.periodic)
    fit = fit_generator(vae, train, val, epochs=args.epochs, beta=args.beta, lr=args.lr,
                        progress=lambda e, f: print(f"epoch {e}: train MSE {f.train_mse[-1]:.4f}, val MSE "
                                                    f"{f.val_mse[-1]:.4f}, KL {f.val_kl[-1]:.1f} "
                                                    f"({time.time() - start:.0f} s)", flush=True))
    baseline = float(np.mean((val - train.mean(axis=0)) ** 2))  # predicting the mean grid
    info = {"voxel_params_hash": VoxelParams().params_hash(), "space": "log1p", "clip": DEFAULT_CLIP,
            **vae.config(), "n_train": int(len(train)), "n_val": int(len(val)), "epochs": args.epochs,
            "beta": args.beta, "lr": args.lr,
            "val_mse": fit.val_mse[-1], "val_mse_mean_grid": baseline, "train_mse": fit.train_mse,
            "val_mse_curve": fit.val_mse, "seconds": time.time() - start}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_generator(vae, str(args.out), info)
    (args.out.parent / LIBRARY_CODES_FILE).unlink(missing_ok=True)  # the old generator's codes (--density-head)
    if args.out == OUT:
        (ROOT / "bench" / "results" / "generator.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps({k: v for k, v in info.items() if k not in ("train_mse", "val_mse_curve")}, indent=1))
    return 0


def fit_head(args: argparse.Namespace) -> int:
    """Fit the shipped VAE's density head on the encoder means of every grid and the CIFs' exact densities."""
    import torch

    from models.datasets import coremof_structures
    from models.generator import (
        LIBRARY_CODES_FILE,
        LatentCodes,
        fit_density_head,
        load_generator,
        save_generator,
        to_generator_space,
    )

    vae, info = load_generator(str(args.out))
    folder = default_cache_dir() / "voxels" / str(info["voxel_params_hash"])
    names = sorted(p.stem for p in folder.glob("*.npy") if not p.name.endswith(".tmp.npy"))[: args.limit]
    density = coremof_structures(names, jobs=args.jobs)["density_g_cm3"].to_numpy(dtype=np.float64)
    usable = np.isfinite(density) & (density > 0)
    names, log_density = [n for n, ok in zip(names, usable, strict=True) if ok], np.log(density[usable])
    codes = []
    with torch.no_grad():
        for first in range(0, len(names), 256):
            grids = np.stack([np.load(folder / f"{n}.npy") for n in names[first:first + 256]]).astype(np.float32)
            x = torch.as_tensor(to_generator_space(grids, float(info.get("clip") or 100.0)))[:, None]
            codes.append(vae.encode(x)[0].numpy())
    z = np.concatenate(codes)
    held_out = np.random.default_rng(0).random(len(names)) < 0.05
    head = fit_density_head(z[~held_out], log_density[~held_out], z[held_out], log_density[held_out])
    info["density_head"] = {**head.to_dict(), "n_train": int((~held_out).sum()), "n_val": int(held_out.sum()),
                            "target": "ln(density / (g/cm3)) of the CIF"}
    save_generator(vae, str(args.out), info)
    LatentCodes(names, z.astype(np.float32), log_density).save(str(args.out.parent / LIBRARY_CODES_FILE))
    if args.out == OUT:
        (ROOT / "bench" / "results" / "generator.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info["density_head"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
