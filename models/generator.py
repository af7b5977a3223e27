"""A generative model of energy grids: a small 3D convolutional VAE (the generator half of inverse design).

The VAE works on ``t = log(1 + min(grid, clip))`` of the raw Boltzmann-factor grid (:func:`to_generator_space`):
0 inside atoms, log 2 in empty pore space, up to log(1 + clip) in the most attractive pockets. In that space the
voxels are well conditioned (the raw factors are heavy-tailed: a plain MSE on them learns only the mean grid);
:func:`from_generator_space` turns a decoded code back into a raw grid that any RetNet of the same voxel
parameters can score. It is trained on every CoRE MOF 2019 grid (no labels needed);
:func:`models.swarm.particle_swarm` then searches its latent space for codes whose decoded landscape the
predictor scores close to a target (:mod:`models.inverse_design`).

Shapes: grid (B, 1, 25, 25, 25) → encoder 8/16/32 channels at 13³/7³/4³ → μ, log σ² (B, latent) → decoder back
to (B, 1, 25, 25, 25). About 0.23 M parameters with the shipped 32-d latent (0.14 M with 16).

Examples
--------
>>> import torch
>>> vae = GridVAE(latent_dim=8).eval()
>>> x = torch.randn(2, 1, 25, 25, 25)
>>> tuple(vae.decode(vae.encode(x)[0]).shape)
(2, 1, 25, 25, 25)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: Default size of the latent code (the shipped generator's; the first one had 16).
LATENT_DIM = 32
#: File of a trained generator (state dict + config) in a model folder.
GENERATOR_FILE = "generator.pt"
#: Boltzmann factors above this are clipped before the log (the shipped standardizer's clip).
DEFAULT_CLIP = 100.0


def to_generator_space(grid: np.ndarray | torch.Tensor, clip: float = DEFAULT_CLIP) -> np.ndarray | torch.Tensor:
    """Raw Boltzmann factors → log(1 + min(grid, clip)), the space the VAE models."""
    if isinstance(grid, torch.Tensor):
        return torch.log1p(grid.clamp(0.0, clip))
    return np.log1p(np.clip(grid, 0.0, clip))


def from_generator_space(t: np.ndarray | torch.Tensor, clip: float = DEFAULT_CLIP) -> np.ndarray | torch.Tensor:
    """Inverse of :func:`to_generator_space`: exp(t) − 1, kept within [0, clip]."""
    if isinstance(t, torch.Tensor):
        return torch.expm1(t).clamp(0.0, clip)
    return np.clip(np.expm1(t), 0.0, clip)


class GridVAE(nn.Module):
    """3D convolutional VAE of 25³ energy grids in generator space (:func:`to_generator_space`).

    Parameters
    ----------
    latent_dim : int
        Size of the latent code z.
    channels : tuple of 3 int
        Channels of the encoder's three stride-2 convolutions (the decoder mirrors them).
    periodic : bool
        Circular padding in every convolution and upsampling followed by a circular convolution in the decoder:
        the grid spans a periodic supercell, so its faces touch (False: the original zero-padded VAE with
        transposed convolutions, kept so earlier generators load).
    """

    def __init__(self, latent_dim: int = LATENT_DIM, channels: tuple[int, int, int] = (8, 16, 32),
                 periodic: bool = False) -> None:
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.channels = tuple(int(c) for c in channels)
        self.periodic = bool(periodic)
        c1, c2, c3 = self.channels
        pad = "circular" if self.periodic else "zeros"
        self.encoder = nn.Sequential(
            nn.Conv3d(1, c1, 3, stride=2, padding=1, padding_mode=pad), nn.LeakyReLU(0.1),    # 25 → 13
            nn.Conv3d(c1, c2, 3, stride=2, padding=1, padding_mode=pad), nn.LeakyReLU(0.1),   # 13 → 7
            nn.Conv3d(c2, c3, 3, stride=2, padding=1, padding_mode=pad), nn.LeakyReLU(0.1),   # 7 → 4
            nn.Flatten(),
        )
        self.mu = nn.Linear(c3 * 4**3, self.latent_dim)
        self.log_var = nn.Linear(c3 * 4**3, self.latent_dim)
        self.expand = nn.Linear(self.latent_dim, c3 * 4**3)
        if self.periodic:
            def up(n_in: int, n_out: int, size: int) -> list[nn.Module]:
                return [nn.Upsample(size=(size,) * 3, mode="trilinear", align_corners=False),
                        nn.Conv3d(n_in, n_out, 3, padding=1, padding_mode="circular")]
            self.decoder = nn.Sequential(
                *up(c3, c2, 7), nn.LeakyReLU(0.1), *up(c2, c1, 13), nn.LeakyReLU(0.1), *up(c1, 1, 25),
            )
        else:
            self.decoder = nn.Sequential(
                nn.ConvTranspose3d(c3, c2, 3, stride=2, padding=1), nn.LeakyReLU(0.1),  # 4 → 7
                nn.ConvTranspose3d(c2, c1, 3, stride=2, padding=1), nn.LeakyReLU(0.1),  # 7 → 13
                nn.ConvTranspose3d(c1, 1, 3, stride=2, padding=1),                      # 13 → 25
            )
        # the mean training grid: the decoder learns the departures from it (set by fit_generator)
        self.register_buffer("offset", torch.zeros(1, 1, 25, 25, 25))

    def config(self) -> dict[str, object]:
        """What :func:`load_generator` needs to rebuild this architecture."""
        return {"latent_dim": self.latent_dim, "channels": list(self.channels), "periodic": self.periodic}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grids in generator space (B, 1, 25, 25, 25) → μ and log σ² of q(z | x), each (B, latent)."""
        h = self.encoder(x)
        return self.mu(h), self.log_var(h).clamp(-12.0, 8.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent codes (B, latent) → grids in generator space (B, 1, 25, 25, 25)."""
        return self.decoder(self.expand(z).view(-1, self.channels[2], 4, 4, 4)) + self.offset

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction of a sampled code, μ and log σ²."""
        mu, log_var = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var) if self.training else mu
        return self.decode(z), mu, log_var


@dataclass(frozen=True)
class DensityHead:
    """p(ln ρ | z): the crystal density of a latent code, a linear-Gaussian regression on real grids' codes.

    ln(ρ / (g/cm³)) = intercept + coef · z + residual_std · ε, ε ~ N(0, 1). Fitted (ridge) on the encoder means μ
    of CoRE MOF grids and the exact densities of their CIFs: the landscape fixes the density only in part (it
    has no absolute scale and no atomic masses), so a design draws ε as a latent coordinate of its own, under the
    same standard-normal prior as z. That lets a predictor that reads the density (``retnet-ch4:6``) score a
    generated landscape with a density that is plausible for it.

    Attributes
    ----------
    coef : tuple of float, length latent_dim
    intercept, residual_std : float
        ln(g/cm³).
    val_r2 : float
        R² of ln ρ on the held-out codes (how much of the density the landscape determines).
    """

    coef: tuple[float, ...]
    intercept: float
    residual_std: float
    val_r2: float

    def log_density(self, z: np.ndarray | torch.Tensor, noise: np.ndarray | torch.Tensor | None = None
                    ) -> np.ndarray | torch.Tensor:
        """ln ρ (g/cm³) of codes z (B, latent) and standard-normal residual draws ``noise`` (B,) (None: 0)."""
        if isinstance(z, torch.Tensor):
            out = z @ torch.as_tensor(self.coef, dtype=z.dtype) + self.intercept
        else:
            out = np.asarray(z, dtype=np.float64) @ np.asarray(self.coef) + self.intercept
        return out if noise is None else out + self.residual_std * noise

    def to_dict(self) -> dict[str, object]:
        return {"coef": list(self.coef), "intercept": self.intercept, "residual_std": self.residual_std,
                "val_r2": self.val_r2}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> DensityHead:
        return cls(tuple(float(v) for v in data["coef"]), float(data["intercept"]),  # type: ignore[attr-defined]
                   float(data["residual_std"]), float(data["val_r2"]))  # type: ignore[arg-type]


def fit_density_head(train_codes: np.ndarray, train_log_density: np.ndarray, val_codes: np.ndarray,
                     val_log_density: np.ndarray, alpha: float = 1.0) -> DensityHead:
    """Ridge regression (penalty ``alpha``) of ln ρ on codes; residual std and R² from the held-out codes."""
    x = np.asarray(train_codes, dtype=np.float64)
    y = np.asarray(train_log_density, dtype=np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean()
    xc = x - x_mean
    coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - y_mean))
    intercept = float(y_mean - x_mean @ coef)
    residual = np.asarray(val_log_density, dtype=np.float64) - (np.asarray(val_codes) @ coef + intercept)
    total = np.asarray(val_log_density) - np.mean(val_log_density)
    r2 = float(1.0 - (residual**2).sum() / max((total**2).sum(), 1e-12))
    return DensityHead(tuple(float(c) for c in coef), intercept, float(residual.std()), r2)


def density_head(info: dict[str, object]) -> DensityHead | None:
    """The density head stored in a generator's info (None: the generator has none)."""
    data = info.get("density_head")
    return DensityHead.from_dict(data) if isinstance(data, dict) else None


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, reconstruction MSE per voxel, KL per grid): total = MSE + beta · KL / voxels."""
    mse = F.mse_loss(recon, x)
    kl = (-0.5 * (1 + log_var - mu**2 - log_var.exp()).sum(dim=1)).mean()
    return mse + beta * kl / x[0].numel(), mse, kl


@dataclass
class GeneratorFit:
    """Loss per epoch (training and validation reconstruction MSE, KL), for the card and the README."""

    train_mse: list[float] = field(default_factory=list)
    val_mse: list[float] = field(default_factory=list)
    val_kl: list[float] = field(default_factory=list)


def fit_generator(vae: GridVAE, train: np.ndarray, val: np.ndarray, *, epochs: int = 10, batch_size: int = 64,
                  lr: float = 2e-3, beta: float = 1.0, seed: int = 0,
                  progress: object | None = None) -> GeneratorFit:
    """Train ``vae`` in place on grids in generator space (N, 25, 25, 25) float32; validation MSE after each epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        vae.offset.copy_(torch.as_tensor(train.mean(axis=0), dtype=torch.float32)[None, None])
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    fit = GeneratorFit()
    x_val = torch.as_tensor(val[:, None])
    for epoch in range(epochs):
        vae.train()
        order = rng.permutation(len(train))
        total, n = 0.0, 0
        for start in range(0, len(order), batch_size):
            x = torch.as_tensor(train[order[start:start + batch_size], None])
            recon, mu, log_var = vae(x)
            loss, mse, _ = vae_loss(recon, x, mu, log_var, beta)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, n = total + mse.item() * len(x), n + len(x)
        vae.eval()
        with torch.no_grad():
            mses, kls = [], []
            for start in range(0, len(x_val), 256):
                xb = x_val[start:start + 256]
                recon, mu, log_var = vae(xb)
                _, mse, kl = vae_loss(recon, xb, mu, log_var, beta)
                mses.append(mse.item() * len(xb))
                kls.append(kl.item() * len(xb))
        fit.train_mse.append(total / max(n, 1))
        fit.val_mse.append(sum(mses) / max(len(x_val), 1))
        fit.val_kl.append(sum(kls) / max(len(x_val), 1))
        if callable(progress):
            progress(epoch + 1, fit)
    return fit


#: Encoder means of the CoRE MOF grids, next to the generator (written with its density head).
LIBRARY_CODES_FILE = "library_codes.npz"


@dataclass(frozen=True)
class LatentCodes:
    """The generator's codes of real structures: where a latent search can start from known landscapes.

    Attributes
    ----------
    names : list of str
    codes : np.ndarray (n, latent_dim) float32
        Encoder means μ of the structures' grids.
    log_density : np.ndarray (n,)
        ln(ρ / (g/cm³)) of their CIFs.
    """

    names: list[str]
    codes: np.ndarray
    log_density: np.ndarray

    def start(self, names: list[str], density: DensityHead | None = None) -> np.ndarray:
        """Swarm coordinates of the known ``names`` (others skipped), in their order: the code, and with a
        density head the residual coordinate ε = (ln ρ − head(z)) / residual_std that gives the structure's
        own density. (k, latent_dim [+ 1])."""
        index = {n: i for i, n in enumerate(self.names)}
        rows = [index[n] for n in names if n in index]
        z = self.codes[rows].astype(np.float64)
        if density is None:
            return z
        eps = (self.log_density[rows] - density.log_density(z)) / density.residual_std
        return np.concatenate([z, eps[:, None]], axis=1)

    def save(self, path: str) -> None:
        with open(path, "wb") as handle:
            np.savez_compressed(handle, names=np.asarray(self.names, dtype=str), codes=self.codes.astype(np.float32),
                                log_density=self.log_density.astype(np.float32))

    @classmethod
    def load(cls, path: str) -> LatentCodes:
        with np.load(path, allow_pickle=False) as data:
            return cls([str(n) for n in data["names"]], data["codes"], data["log_density"].astype(np.float64))


def generator_split(n: int, seed: int = 0, fraction: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held out) of ``n`` grids sorted by name: a seeded ``fraction`` is held out (≥ 1)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(n * fraction))
    return order[n_val:], order[:n_val]


def save_generator(vae: GridVAE, path: str, info: dict[str, object]) -> None:
    """Weights and config (:meth:`GridVAE.config`, plus ``info``) in one file."""
    torch.save({"state": vae.state_dict(), **vae.config(), "info": info}, path)


def load_generator(path: str, device: str = "cpu") -> tuple[GridVAE, dict[str, object]]:
    """A trained generator in eval mode and its info."""
    data = torch.load(path, map_location=device, weights_only=True)
    vae = GridVAE(int(data["latent_dim"]), tuple(int(c) for c in data.get("channels", (8, 16, 32))),  # type: ignore[arg-type]
                  bool(data.get("periodic", False)))
    vae.load_state_dict(data["state"])
    return vae.eval(), dict(data.get("info") or {})


__all__ = ["DEFAULT_CLIP", "GENERATOR_FILE", "LATENT_DIM", "LIBRARY_CODES_FILE", "DensityHead", "GeneratorFit",
           "GridVAE", "LatentCodes",
           "density_head", "fit_density_head", "fit_generator", "from_generator_space", "generator_split",
           "load_generator", "save_generator", "to_generator_space", "vae_loss"]
