"""Whole CH4 isotherms: a RetNet backbone with a head that is non-decreasing in pressure by construction.

An adsorption isotherm n(p) at fixed temperature never decreases with pressure (absolute uptake,
single component). :class:`MonotoneHead` builds that into the model instead of hoping training finds
it: from features it computes k raw values r_0 … r_{k-1} (one Linear layer) and returns

    y_0 = r_0,        y_i = y_{i-1} + softplus(r_i)   (i = 1 … k-1),

so y_0 ≤ y_1 ≤ … ≤ y_{k-1} for any input and any weights (softplus ≥ 0; the running sum is taken
column by column, so the inequality also holds exactly in floating point on every device).

:class:`RetNetIsotherm` composes a :class:`models.retnet.RetNet` (its convolutions and fingerprint head,
e.g. a pre-trained or fine-tuned backbone) with a :class:`MonotoneHead` on the 20-dimensional fingerprint.
:func:`deliverable_capacity` is the storage metric: uptake at the high pressure minus uptake at the low
one (US DOE adsorbed natural gas: 65 → 5.8 bar at 298 K).

Examples
--------
>>> import torch
>>> model = RetNetIsotherm((1.0, 5.8, 35.0, 65.0)).eval()
>>> curves = model(torch.rand(3, 1, 25, 25, 25))
>>> curves.shape
torch.Size([3, 4])
>>> bool((curves.diff(dim=1) >= 0).all())
True
>>> deliverable_capacity(curves, model.pressures_bar).shape
torch.Size([3])
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.retnet import FINGERPRINT_SIZE, NEGATIVE_SLOPE, FreezeMode, RetNet, freeze
from models.units import DELIVERY_HIGH_BAR, DELIVERY_LOW_BAR

#: Pressures of the shipped isotherm labels, bar (see models.gcmc.ISOTHERM_PRESSURES_BAR).
DEFAULT_PRESSURES_BAR = (1.0, 5.8, 35.0, 65.0)
#: Smallest increment (label units) the head is initialised to for a flat stretch of the mean curve.
MIN_INIT_INCREMENT = 1e-6

_Array = TypeVar("_Array", torch.Tensor, np.ndarray)


def monotone_from_raw(raw: torch.Tensor) -> torch.Tensor:
    """Raw values (..., k) → non-decreasing values (..., k): first value, then cumulative softplus increments.

    Parameters
    ----------
    raw : torch.Tensor, shape (..., k)
        Unconstrained values; ``raw[..., 0]`` is the first output, ``softplus(raw[..., i])`` the step from
        output i - 1 to output i.

    Returns
    -------
    torch.Tensor, shape (..., k)
        ``out[..., i] >= out[..., i - 1]`` for every i, exactly (also in floating point).

    Examples
    --------
    >>> monotone_from_raw(torch.tensor([[1.0, -50.0, 0.0]]))
    tensor([[1.0000, 1.0000, 1.6931]])
    """
    if raw.dim() == 0 or raw.shape[-1] < 1:
        raise ValueError(f"expected raw values of shape (..., k) with k >= 1, got {tuple(raw.shape)}")
    steps = F.softplus(raw[..., 1:])
    columns = [raw[..., 0]]
    for i in range(steps.shape[-1]):  # sequential on purpose: a parallel cumsum may round a step below zero
        columns.append(columns[-1] + steps[..., i])
    return torch.stack(columns, dim=-1)


def raw_from_monotone(values: torch.Tensor, min_increment: float = MIN_INIT_INCREMENT) -> torch.Tensor:
    """Inverse of :func:`monotone_from_raw` for a non-decreasing curve (steps below ``min_increment`` raised to it).

    A curve that decreases somewhere is first replaced by its running maximum.

    Examples
    --------
    >>> curve = torch.tensor([0.5, 1.5, 4.0], dtype=torch.float64)
    >>> torch.allclose(monotone_from_raw(raw_from_monotone(curve)), curve)
    True
    """
    curve = torch.cummax(values, dim=-1).values
    steps = curve.diff(dim=-1).clamp_min(min_increment)
    inverse_softplus = steps + torch.log(-torch.expm1(-steps))  # log(exp(s) - 1), stable for small and large s
    return torch.cat([curve[..., :1], inverse_softplus], dim=-1)


class MonotoneHead(nn.Module):
    """Linear ``in_features → k`` followed by :func:`monotone_from_raw`: k outputs non-decreasing in their order.

    Parameters
    ----------
    in_features : int
        Length of the feature vector (20 for a RetNet fingerprint).
    n_outputs : int
        Number k of outputs (pressures, in increasing order).
    nonnegative : bool
        Also pass the first value through softplus, so every output is ≥ 0 (absolute uptakes).

    Examples
    --------
    >>> head = MonotoneHead(20, 4)
    >>> out = head(torch.randn(8, 20))
    >>> out.shape, bool((out.diff(dim=1) >= 0).all())
    (torch.Size([8, 4]), True)
    """

    def __init__(self, in_features: int, n_outputs: int, *, nonnegative: bool = False) -> None:
        super().__init__()
        if in_features < 1 or n_outputs < 1:
            raise ValueError(f"need in_features >= 1 and n_outputs >= 1, got {in_features} and {n_outputs}")
        self.n_outputs = int(n_outputs)
        self.nonnegative = bool(nonnegative)
        self.linear = nn.Linear(in_features, n_outputs)
        nn.init.kaiming_normal_(self.linear.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu")
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, in_features) → (B, k), non-decreasing along dim 1 (and ≥ 0 throughout when ``nonnegative``)."""
        raw = self.linear(features)
        if self.nonnegative:  # the first value through softplus too: an uptake is never negative
            raw = torch.cat([F.softplus(raw[..., :1]), raw[..., 1:]], dim=-1)
        return monotone_from_raw(raw)

    def init_bias(self, mean_values: float | Sequence[float] | np.ndarray | torch.Tensor) -> None:
        """Set the bias so that zero features give ``mean_values`` (e.g. the training labels' mean curve).

        Parameters
        ----------
        mean_values : float or array-like, shape (k,)
            Mean label per output, label units; made non-decreasing (running maximum) with steps of at
            least :data:`MIN_INIT_INCREMENT`. A scalar is broadcast (a flat curve).
        """
        values = torch.as_tensor(np.asarray(mean_values, dtype=np.float64)).reshape(-1)
        if values.numel() == 1:
            values = values.expand(self.n_outputs)
        if values.numel() != self.n_outputs:
            raise ValueError(f"expected {self.n_outputs} mean value(s), got {values.numel()}")
        if not torch.isfinite(values).all():
            raise ValueError(f"mean values must be finite, got {values.tolist()}")
        raw = raw_from_monotone(values)
        if self.nonnegative:  # inverse softplus of the first value (at least MIN_INIT_INCREMENT)
            first = raw[..., :1].clamp_min(MIN_INIT_INCREMENT)
            raw = torch.cat([first + torch.log(-torch.expm1(-first)), raw[..., 1:]], dim=-1)
        with torch.no_grad():
            bias = self.linear.bias
            self.linear.bias.copy_(raw.to(device=bias.device, dtype=bias.dtype))


def _check_pressures(pressures_bar: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(p) for p in pressures_bar)
    if not values:
        raise ValueError("an isotherm needs at least one pressure")
    if any(not math.isfinite(p) or p <= 0 for p in values):
        raise ValueError(f"pressures must be positive (bar), got {values}")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"pressures must be strictly increasing (bar), got {values}")
    return values


class RetNetIsotherm(nn.Module):
    """A RetNet backbone (by composition) with a :class:`MonotoneHead`: grid → uptake at each pressure.

    Parameters
    ----------
    pressures_bar : sequence of float
        Pressures of the outputs, bar, strictly increasing (default 1, 5.8, 35, 65).
    backbone : RetNet, optional
        The convolutions and fingerprint head to use (kept as ``.backbone``, not copied; see
        :meth:`from_backbone` for a copy of a trained model). Default: a freshly initialised RetNet.
        Its ``.output`` layer is not used: the isotherm head reads the 20-dimensional fingerprint.

    Attributes
    ----------
    backbone : RetNet
    isotherm_head : MonotoneHead
        Linear 20 → k and the cumulative softplus.
    pressures_bar : tuple of float
    n_outputs : int
        k = number of pressures.

    Notes
    -----
    Frozen parts of the backbone (:meth:`freeze_backbone`, :func:`models.retnet.freeze`) stay in eval mode
    under ``train()``, as for a RetNet. ``forward``, ``fingerprint``, ``member_outputs`` and
    ``init_output_bias`` have the RetNet signatures, so training and prediction loops that take a RetNet
    take this model too.
    """

    def __init__(self, pressures_bar: Sequence[float] = DEFAULT_PRESSURES_BAR, backbone: RetNet | None = None) -> None:
        super().__init__()
        self.pressures_bar = _check_pressures(pressures_bar)
        self.n_outputs = len(self.pressures_bar)
        self.backbone = backbone if backbone is not None else RetNet(n_outputs=1)
        if not isinstance(self.backbone, RetNet):
            raise TypeError(f"backbone must be a RetNet, got {type(self.backbone).__name__}")
        if self.backbone.n_descriptors:
            raise ValueError("an isotherm backbone must read the grid only (this one reads crystal descriptors)")
        self.isotherm_head = MonotoneHead(FINGERPRINT_SIZE, self.n_outputs)

    @classmethod
    def from_backbone(
        cls, base_model: Any, pressures_bar: Sequence[float] = DEFAULT_PRESSURES_BAR, *, freeze_mode: FreezeMode = None
    ) -> RetNetIsotherm:
        """A new isotherm model on a *copy* of a trained RetNet's backbone (the base model is left untouched).

        Parameters
        ----------
        base_model : RetNet or LoadedModel
            A single RetNet, or a loaded model (``.model``) holding one; ensembles are refused (their
            members' fingerprints differ: pick a member).
        pressures_bar : sequence of float
            Output pressures, bar, increasing.
        freeze_mode : {None, "conv", "all-but-output"}
            Applied to the copied backbone (:func:`models.retnet.freeze`); "all-but-output" trains only
            the isotherm head.
        """
        base = getattr(base_model, "model", base_model)
        if not isinstance(base, RetNet):
            raise TypeError(
                f"base_model must be a RetNet or a LoadedModel holding one, got {type(base).__name__}"
                + (" (an ensemble: pass one of its .members)" if hasattr(base, "members") else "")
            )
        backbone = copy.deepcopy(base)
        model = cls(pressures_bar, backbone=backbone)
        model.freeze_backbone(freeze_mode)
        return model

    def freeze_backbone(self, mode: FreezeMode) -> RetNetIsotherm:
        """Freeze parts of the backbone as :func:`models.retnet.freeze` (the isotherm head always trains)."""
        freeze(self.backbone, mode)
        return self

    def fingerprint(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's 20-dimensional fingerprint: (B, 1, 25, 25, 25) → (B, 20)."""
        return self.backbone.fingerprint(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Uptake at each pressure: (B, 1, 25, 25, 25) → (B, k), non-decreasing along dim 1, label units."""
        return self.isotherm_head(self.fingerprint(x))

    def member_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fingerprints (1, B, 20) and curves (1, B, k) in one pass: the one-member form of an ensemble's."""
        fingerprint = self.fingerprint(x)
        return fingerprint[None], self.isotherm_head(fingerprint)[None]

    def init_output_bias(self, mean_targets: float | Sequence[float] | np.ndarray | torch.Tensor) -> None:
        """Start the curve at the training labels' mean curve (see :meth:`MonotoneHead.init_bias`)."""
        self.isotherm_head.init_bias(mean_targets)


class IsothermEnsemble(nn.Module):
    """A (frozen or trainable) RetNet ensemble backbone with one :class:`MonotoneHead` per member.

    Member i's curve is ``heads[i](fingerprint_i(x))``: the members keep their own fingerprint spaces (which
    differ between training seeds), and their spread is the ensemble's uncertainty, as for a
    :class:`models.retnet.RetNetEnsemble`. Every member curve is non-negative and non-decreasing in pressure, so
    their mean is too.
    The backbone's own output layers are kept (in the state dict) but not used.

    Parameters
    ----------
    backbone : RetNetEnsemble or RetNet
        Kept as ``.backbone`` (not copied); a single RetNet is a one-member ensemble.
    pressures_bar : sequence of float
        Output pressures, bar, strictly increasing.

    Attributes
    ----------
    backbone : RetNetEnsemble
    heads : nn.ModuleList of MonotoneHead
    pressures_bar : tuple of float
    n_outputs : int

    Examples
    --------
    >>> from models.retnet import RetNetEnsemble
    >>> model = IsothermEnsemble(RetNetEnsemble([RetNet(), RetNet()])).eval()
    >>> fingerprints, curves = model.member_outputs(torch.rand(3, 1, 25, 25, 25))
    >>> tuple(fingerprints.shape), tuple(curves.shape), bool((curves.diff(dim=2) >= 0).all())
    ((2, 3, 20), (2, 3, 4), True)
    """

    def __init__(self, backbone: Any, pressures_bar: Sequence[float] = DEFAULT_PRESSURES_BAR) -> None:
        super().__init__()
        from models.retnet import RetNetEnsemble

        if isinstance(backbone, RetNet):
            backbone = RetNetEnsemble([backbone])
        if not isinstance(backbone, RetNetEnsemble):
            raise TypeError(f"backbone must be a RetNet or a RetNetEnsemble, got {type(backbone).__name__}")
        self.backbone = backbone
        self.pressures_bar = _check_pressures(pressures_bar)
        self.n_outputs = len(self.pressures_bar)
        self.heads = nn.ModuleList(MonotoneHead(FINGERPRINT_SIZE, self.n_outputs, nonnegative=True)
                                   for _ in backbone.members)

    @property
    def members(self) -> nn.ModuleList:
        """The backbone's members (one curve each)."""
        return self.backbone.members

    @property
    def n_descriptors(self) -> int:
        """Crystal descriptors the backbone reads beside the grid (0: grid only); the heads read its fingerprints."""
        return int(self.backbone.n_descriptors)

    def member_outputs(self, x: torch.Tensor, descriptors: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fingerprints (n, B, 20) and curves (n, B, k) of the n members, from one (fused) backbone pass."""
        fingerprints = self.backbone.member_fingerprints(x, descriptors)
        return fingerprints, self.curves_from_fingerprints(fingerprints)

    def curves_from_fingerprints(self, fingerprints: torch.Tensor) -> torch.Tensor:
        """Member curves (n, B, k) from member fingerprints (n, B, 20): the heads alone (no convolution)."""
        if fingerprints.dim() != 3 or fingerprints.shape[0] != len(self.heads):
            raise ValueError(f"expected fingerprints of shape ({len(self.heads)}, B, {FINGERPRINT_SIZE}), "
                             f"got {tuple(fingerprints.shape)}")
        return torch.stack([head(fingerprints[i]) for i, head in enumerate(self.heads)])

    def forward(self, x: torch.Tensor, descriptors: torch.Tensor | None = None) -> torch.Tensor:
        """Mean curve: (B, 1, 25, 25, 25) [+ (B, m) descriptors] → (B, k), non-decreasing along dim 1, label units."""
        return self.member_outputs(x, descriptors)[1].mean(dim=0)

    def fingerprint(self, x: torch.Tensor, descriptors: torch.Tensor | None = None) -> torch.Tensor:
        """The first member's 20-dimensional fingerprint (as :meth:`RetNetEnsemble.fingerprint`)."""
        return self.backbone.fingerprint(x, descriptors)

    def freeze_backbone(self) -> IsothermEnsemble:
        """Freeze the whole backbone (only the heads train), kept in eval mode under ``train()``."""
        for member in self.backbone.members:
            freeze(member, "all-but-output")
            member.output.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> IsothermEnsemble:
        """Training mode for the heads; a backbone without trainable parameters stays in eval mode."""
        super().train(mode)
        if mode and not any(p.requires_grad for p in self.backbone.parameters()):
            self.backbone.eval()
        return self


def pressure_index(pressures_bar: Sequence[float], pressure: float) -> int:
    """Position of ``pressure`` (bar) in ``pressures_bar`` (relative tolerance 1e-9); ValueError if absent."""
    for i, p in enumerate(pressures_bar):
        if math.isclose(float(p), float(pressure), rel_tol=1e-9, abs_tol=1e-12):
            return i
    raise ValueError(f"pressure {pressure:g} bar is not one of the model's pressures {tuple(pressures_bar)}")


def deliverable_capacity(
    values: _Array,
    pressures: Sequence[float],
    high: float = DELIVERY_HIGH_BAR,
    low: float = DELIVERY_LOW_BAR,
) -> _Array:
    """Deliverable capacity: uptake at ``high`` minus uptake at ``low`` pressure, in the values' unit.

    Parameters
    ----------
    values : torch.Tensor or np.ndarray, shape (..., k)
        Uptakes at ``pressures`` (last axis), any unit (mol/kg, cm³(STP)/cm³).
    pressures : sequence of float
        The k pressures of the last axis, bar.
    high, low : float
        Storage and delivery pressures, bar (default 65 and 5.8: the US DOE ANG metric at 298 K); both
        must be among ``pressures``.

    Returns
    -------
    torch.Tensor or np.ndarray, shape (...)
        ``values[..., i(high)] - values[..., i(low)]`` (≥ 0 for a monotone model's curves when high > low).

    Examples
    --------
    >>> deliverable_capacity(np.array([[0.2, 1.0, 3.0, 4.5]]), (1, 5.8, 35, 65))
    array([3.5])
    """
    if values.shape[-1] != len(pressures):
        raise ValueError(f"values have {values.shape[-1]} pressures on the last axis, {len(pressures)} given")
    return values[..., pressure_index(pressures, high)] - values[..., pressure_index(pressures, low)]


__all__ = [
    "DEFAULT_PRESSURES_BAR",
    "DELIVERY_HIGH_BAR",
    "DELIVERY_LOW_BAR",
    "IsothermEnsemble",
    "MonotoneHead",
    "RetNetIsotherm",
    "deliverable_capacity",
    "monotone_from_raw",
    "pressure_index",
    "raw_from_monotone",
]
