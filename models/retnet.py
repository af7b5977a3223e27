"""RetNet: the small 3D CNN that maps a 25³ energy-voxel grid to adsorption properties.

DESIGN.md §4. Five bias-free convolutions (each followed by BatchNorm3d and
LeakyReLU(0.01)) with two max-pools turn a (1, 25, 25, 25) grid into a
(120, 3, 3, 3) feature map; a fully connected head compresses its 3240 values
to the 20-dimensional **fingerprint**, and a final Linear maps that to k outputs.

======  ===============  ======  =========================  ===========
layer   out channels     kernel  note                       output side
======  ===============  ======  =========================  ===========
conv1   12               3       padding 1, circular        25
conv2   24               3                                  23
pool                     2                                  11
conv3   32               2                                  10
pool                     2                                  5
conv4   64               2                                  4
conv5   120              2                                  3
======  ===============  ======  =========================  ===========

Examples
--------
>>> import torch
>>> model = RetNet(n_outputs=2).eval()
>>> model(torch.rand(3, 1, 25, 25, 25)).shape
torch.Size([3, 2])
>>> model.fingerprint(torch.rand(3, 1, 25, 25, 25)).shape
torch.Size([3, 20])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

#: Grid points per axis the architecture accepts.
INPUT_SIZE = 25
#: Values after flattening the last feature map (120 × 3³).
FLAT_FEATURES = 3240
#: Length of the fingerprint vector.
FINGERPRINT_SIZE = 20
#: Negative slope of every LeakyReLU.
NEGATIVE_SLOPE = 0.01
#: Dropout probability before the first Linear layer.
DROPOUT = 0.3

#: Accepted values of :func:`freeze`'s ``mode``.
FreezeMode = Literal["conv", "all-but-output"] | None
FREEZE_MODES: tuple[str | None, ...] = (None, "conv", "all-but-output")


def _conv_block(in_channels: int, out_channels: int, kernel_size: int, **conv_kwargs: object) -> list[nn.Module]:
    """Bias-free Conv3d → BatchNorm3d → LeakyReLU(0.01)."""
    return [
        nn.Conv3d(in_channels, out_channels, kernel_size, bias=False, **conv_kwargs),  # type: ignore[arg-type]
        nn.BatchNorm3d(out_channels),
        nn.LeakyReLU(NEGATIVE_SLOPE),
    ]


def _linear_block(in_features: int, out_features: int) -> list[nn.Module]:
    """Linear → BatchNorm1d → LeakyReLU(0.01)."""
    return [nn.Linear(in_features, out_features), nn.BatchNorm1d(out_features), nn.LeakyReLU(NEGATIVE_SLOPE)]


class RetNet(nn.Module):
    """The RetNet 3D CNN (thesis architecture).

    Parameters
    ----------
    n_outputs : int
        Number k of predicted values (1 for one property, more for an isotherm).

    Attributes
    ----------
    features : nn.Sequential
        Convolution stack, (B, 1, 25, 25, 25) → (B, 120, 3, 3, 3).
    head : nn.Sequential
        Flatten → Dropout(0.3) → Linear 3240→84 → BN → LeakyReLU → Linear 84→20 → BN → LeakyReLU,
        (B, 120, 3, 3, 3) → (B, 20), the fingerprint.
    output : nn.Linear
        Linear 20→k.
    frozen : str or None
        Mode last applied by :func:`freeze`; frozen parts stay in eval mode under ``train()``.
    """

    def __init__(self, n_outputs: int = 1) -> None:
        super().__init__()
        if n_outputs < 1:
            raise ValueError(f"n_outputs must be >= 1, got {n_outputs}")
        self.n_outputs = int(n_outputs)
        self.frozen: str | None = None
        self.features = nn.Sequential(
            *_conv_block(1, 12, 3, padding=1, padding_mode="circular"),
            *_conv_block(12, 24, 3),
            nn.MaxPool3d(2),
            *_conv_block(24, 32, 2),
            nn.MaxPool3d(2),
            *_conv_block(32, 64, 2),
            *_conv_block(64, 120, 2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(DROPOUT),
            *_linear_block(FLAT_FEATURES, 84),
            *_linear_block(84, FINGERPRINT_SIZE),
        )
        self.output = nn.Linear(FINGERPRINT_SIZE, self.n_outputs)
        self.reset_linear_parameters()

    def reset_linear_parameters(self) -> None:
        """Kaiming-normal init (a = 0.01, leaky_relu) of every Linear weight; Linear biases to zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)

    def init_output_bias(self, mean_targets: float | Sequence[float] | np.ndarray | torch.Tensor) -> None:
        """Set the output bias to the training-label mean (one value per output).

        Parameters
        ----------
        mean_targets : float or array-like, shape (k,)
            Mean training label per output, in the label's unit. A scalar is broadcast.
        """
        values = torch.as_tensor(np.asarray(mean_targets, dtype=np.float64), dtype=self.output.bias.dtype)
        values = values.reshape(-1)
        if values.numel() == 1:
            values = values.expand(self.n_outputs)
        if values.numel() != self.n_outputs:
            raise ValueError(f"expected {self.n_outputs} mean target(s), got {values.numel()}")
        with torch.no_grad():
            self.output.bias.copy_(values.to(self.output.bias.device))

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (1, INPUT_SIZE, INPUT_SIZE, INPUT_SIZE)
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"RetNet expects input of shape (B, 1, 25, 25, 25), got {tuple(x.shape)}")

    def fingerprint(self, x: torch.Tensor) -> torch.Tensor:
        """Return the 20-dimensional fingerprint.

        Parameters
        ----------
        x : torch.Tensor, shape (B, 1, 25, 25, 25)
            Standardized voxel grids.

        Returns
        -------
        torch.Tensor, shape (B, 20)
        """
        self._check_input(x)
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict k values per grid: (B, 1, 25, 25, 25) → (B, k), in the labels' units."""
        return self.output(self.fingerprint(x))

    def train(self, mode: bool = True) -> RetNet:
        """Set training mode, keeping frozen parts (see :func:`freeze`) in eval mode."""
        super().train(mode)
        if mode and self.frozen in ("conv", "all-but-output"):
            self.features.eval()
        if mode and self.frozen == "all-but-output":
            self.head.eval()
        return self


class RetNetEnsemble(nn.Module):
    """The average of several RetNets sharing one input standardization (e.g. training seeds).

    Parameters
    ----------
    members : sequence of RetNet
        Models with the same number of outputs.

    Attributes
    ----------
    members : nn.ModuleList
    n_outputs : int

    Examples
    --------
    >>> import torch
    >>> ensemble = RetNetEnsemble([RetNet(), RetNet()]).eval()
    >>> ensemble(torch.rand(2, 1, 25, 25, 25)).shape
    torch.Size([2, 1])
    """

    def __init__(self, members: Sequence[RetNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        outputs = {m.n_outputs for m in members}
        if len(outputs) != 1:
            raise ValueError(f"ensemble members disagree on the number of outputs: {sorted(outputs)}")
        self.members = nn.ModuleList(members)
        self.n_outputs = members[0].n_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of the members' predictions: (B, 1, 25, 25, 25) → (B, k)."""
        return torch.stack([member(x) for member in self.members]).mean(dim=0)

    def fingerprint(self, x: torch.Tensor) -> torch.Tensor:
        """The first member's 20-dimensional fingerprint (members' fingerprint spaces differ)."""
        return self.members[0].fingerprint(x)


def freeze(model: RetNet, mode: FreezeMode) -> RetNet:
    """Freeze parts of a RetNet for fine-tuning (in place; returns the model).

    Parameters
    ----------
    model : RetNet
    mode : {None, "conv", "all-but-output"}
        None: everything trainable. "conv": ``.features`` frozen, i.e. no gradients
        and its BatchNorm running statistics kept (the stack stays in eval mode under
        ``model.train()``). "all-but-output": ``.features`` and ``.head`` frozen the same
        way (so the head's dropout is off too); only ``.output`` trains.

    Returns
    -------
    RetNet
        The same model.
    """
    if mode not in FREEZE_MODES:
        raise ValueError(f"unknown freeze mode {mode!r}; expected one of {FREEZE_MODES}")
    frozen_parts: list[nn.Module] = []
    if mode in ("conv", "all-but-output"):
        frozen_parts.append(model.features)
    if mode == "all-but-output":
        frozen_parts.append(model.head)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    for part in frozen_parts:
        for parameter in part.parameters():
            parameter.requires_grad_(False)
    model.frozen = mode
    model.train(model.training)
    return model
