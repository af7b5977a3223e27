"""Which crystal scalars help RetNet? One fine-tuning run per variant on the shipped model's split (README, Model).

    python bench/descriptor_ablation.py VARIANT EPOCHS SEED [THREADS]     # appends to /tmp/exp/results.jsonl

Variants (all fine-tuned from the shipped retnet-coremof-geometry backbone, thesis recipe compressed to EPOCHS
epochs with StepLR(EPOCHS // 5, 0.5), augmentation on, all current labels with grids, scripts/ch4_model.py's split):

- ``plain``: the grid only;
- ``rho``: + ln of the crystal density, added to the head's first Linear (as ``models.retnet.RetNet(n_descriptors)``);
- ``rhohist``: + the 13 energy-histogram fractions and ln of the mean Boltzmann factor;
- ``vol``: the grid only, trained on the volumetric uptake (mol/kg × ρ) and divided by the exact density.

The density is read from the core-mof table, whose ``cm3_g`` column holds the density in g/cm³ (it equals ours from
the CIF to 1e-4); ``1 / cm3_g`` below is therefore ρ⁻¹, and its logarithm −ln ρ: a sign flip of a standardized
input, which the network absorbs.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import mean_absolute_error, r2_score
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from ch4_model import coremof_properties, dataset, energy_histogram  # noqa: E402

from models.artifacts import load_model  # noqa: E402
from models.retnet import RetNet  # noqa: E402
from models.transforms import random_symmetry  # noqa: E402

OUT = Path("/tmp/exp")
#: The extra-label rows of the split the README reports (the shipped v6 split).
EXTRA_ROWS = 1255


class Hybrid(nn.Module):
    """A RetNet whose head's first Linear also reads ``n_scalars`` standardized scalars (bias-free Linear)."""

    def __init__(self, base: RetNet, n_scalars: int) -> None:
        super().__init__()
        self.features = base.features
        head = base.head  # Flatten, Dropout, Linear, BN, LeakyReLU, Linear, BN, LeakyReLU
        self.flat = nn.Sequential(head[0], head[1])
        self.lin1 = head[2]
        self.rest = nn.Sequential(*list(head)[3:])
        self.scalar = nn.Linear(n_scalars, self.lin1.out_features, bias=False)
        nn.init.kaiming_normal_(self.scalar.weight, a=0.01, nonlinearity="leaky_relu")
        self.output = nn.Linear(20, 1)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        z = self.lin1(self.flat(self.features(x))) + self.scalar(s)
        return self.output(self.rest(z))


def main(variant: str, epochs: int, seed: int, threads: int = 2) -> None:
    torch.set_num_threads(threads)
    d = dataset(extra_rows=EXTRA_ROWS)
    props = coremof_properties().loc[d["names"]]
    rho = 1 / props["cm3_g"].to_numpy(float)
    cols = [np.log(rho)]
    if "hist" in variant:
        h = energy_histogram(d["grids"])
        cols += [h[:, :-1], np.log(h[:, -1:])]
    s = np.column_stack(cols) if variant not in ("plain", "vol") else np.zeros((len(rho), 1))
    tr, va, te = d["pool"], d["val"], d["test"]
    s = ((s - s[tr].mean(0)) / (s[tr].std(0) + 1e-9)).astype(np.float32)
    base = load_model(ROOT / "models" / "shipped" / "retnet-coremof-geometry", device="cpu")
    std = base.standardizer
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = Hybrid(base.model, s.shape[1])
    if variant in ("plain", "vol"):
        with torch.no_grad():
            net.scalar.weight.zero_()
        net.scalar.weight.requires_grad_(False)
    y = d["y"].astype(np.float32)
    scale = rho.astype(np.float32) if variant == "vol" else np.ones_like(y)
    yt = y * scale
    with torch.no_grad():
        net.output.bias.fill_(float(yt[tr].mean()))
    x_all, s_all, y_all = torch.from_numpy(d["grids"][:, None]), torch.from_numpy(s), torch.from_numpy(yt[:, None])
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, max(1, epochs // 5), 0.5)

    def predict(idx: np.ndarray) -> np.ndarray:
        net.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(idx), 256):
                b = torch.as_tensor(idx[i:i + 256])
                out.append(net(std(x_all[b]), s_all[b])[:, 0])
        return torch.cat(out).numpy() / scale[idx]

    t0 = time.time()
    for ep in range(epochs):
        net.train()
        order = torch.as_tensor(tr)[torch.randperm(len(tr), generator=g)]
        for b in torch.split(order, 64):
            if len(b) < 2:
                continue
            x = random_symmetry(std(x_all[b]), g)
            opt.zero_grad()
            loss = nn.functional.mse_loss(net(x, s_all[b]), y_all[b])
            loss.backward()
            opt.step()
        sched.step()
        print(f"{variant} ep {ep + 1} val R2 {r2_score(y[va], predict(va)):.3f} ({time.time() - t0:.0f}s)", flush=True)
    pt = predict(te)
    res = {"variant": variant, "seed": seed, "epochs": epochs, "val_r2": r2_score(y[va], predict(va)),
           "test_r2": r2_score(y[te], pt), "test_mae": mean_absolute_error(y[te], pt)}
    print(json.dumps(res), flush=True)
    OUT.mkdir(exist_ok=True)
    with open(OUT / "results.jsonl", "a") as handle:
        handle.write(json.dumps(res) + "\n")
    np.save(OUT / f"pred_{variant}_{seed}_{epochs}.npy", pt)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 2)
