"""RetNet: the small 3D CNN that maps a 25³ energy-voxel grid to adsorption properties.

DESIGN.md §4. Five bias-free convolutions (each followed by BatchNorm3d and
LeakyReLU(0.01)) with two max-pools turn a (1, 25, 25, 25) grid into a
(120, 3, 3, 3) feature map; a fully connected head compresses its 3240 values
to the 20-dimensional **fingerprint**, and a final Linear maps that to k outputs.
A *descriptor* RetNet (``n_descriptors`` > 0) also reads m exact crystal descriptors (:mod:`models.descriptors`):
a bias-free Linear m→84 adds them to the head's first Linear layer, before its BatchNorm.
:class:`RetNetEnsemble` averages several RetNets; in eval mode it runs them as one fused pass.

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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

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

#: Position in ``RetNet.head`` of the Linear 3240→84 to which the descriptors' Linear is added.
DESCRIPTOR_JOIN = 2

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
    n_descriptors : int
        Number m of standardized crystal descriptors read beside the grid (0: the thesis' grid-only RetNet).

    Attributes
    ----------
    features : nn.Sequential
        Convolution stack, (B, 1, 25, 25, 25) → (B, 120, 3, 3, 3).
    head : nn.Sequential
        Flatten → Dropout(0.3) → Linear 3240→84 → BN → LeakyReLU → Linear 84→20 → BN → LeakyReLU,
        (B, 120, 3, 3, 3) → (B, 20), the fingerprint.
    output : nn.Linear
        Linear 20→k.
    descriptor_input : nn.Linear or None
        Linear m→84 (bias-free), added to the output of the head's Linear 3240→84; None when m = 0.
    frozen : str or None
        Mode last applied by :func:`freeze`; frozen parts stay in eval mode under ``train()``.
    """

    def __init__(self, n_outputs: int = 1, n_descriptors: int = 0) -> None:
        super().__init__()
        if n_outputs < 1:
            raise ValueError(f"n_outputs must be >= 1, got {n_outputs}")
        if n_descriptors < 0:
            raise ValueError(f"n_descriptors must be >= 0, got {n_descriptors}")
        self.n_outputs = int(n_outputs)
        self.n_descriptors = int(n_descriptors)
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
        self.descriptor_input = nn.Linear(self.n_descriptors, 84, bias=False) if self.n_descriptors else None
        self.reset_linear_parameters()

    def reset_linear_parameters(self) -> None:
        """Kaiming-normal init (a = 0.01, leaky_relu) of every Linear weight; Linear biases to zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu")
                if module.bias is not None:
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

    def _check_input(self, x: torch.Tensor, descriptors: torch.Tensor | None = None) -> None:
        expected = (1, INPUT_SIZE, INPUT_SIZE, INPUT_SIZE)
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"RetNet expects input of shape (B, 1, 25, 25, 25), got {tuple(x.shape)}")
        check_descriptors(self.n_descriptors, len(x), descriptors)

    def fingerprint(self, x: torch.Tensor, descriptors: torch.Tensor | None = None) -> torch.Tensor:
        """Return the 20-dimensional fingerprint.

        Parameters
        ----------
        x : torch.Tensor, shape (B, 1, 25, 25, 25)
            Standardized voxel grids.
        descriptors : torch.Tensor, shape (B, m), optional
            Standardized crystal descriptors; required exactly when ``n_descriptors`` = m > 0.

        Returns
        -------
        torch.Tensor, shape (B, 20)
        """
        self._check_input(x, descriptors)
        h = self.features(x)
        for position, layer in enumerate(self.head):
            h = layer(h)
            if position == DESCRIPTOR_JOIN and self.descriptor_input is not None:
                h = h + self.descriptor_input(descriptors)
        return h

    def forward(self, x: torch.Tensor, descriptors: torch.Tensor | None = None) -> torch.Tensor:
        """Predict k values per grid: (B, 1, 25, 25, 25) [+ (B, m) descriptors] → (B, k), in the labels' units."""
        return self.output(self.fingerprint(x, descriptors))

    def member_outputs(self, x: torch.Tensor, descriptors: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fingerprints (1, B, 20) and predictions (1, B, k) in one pass: the one-member form of an ensemble's."""
        fingerprint = self.fingerprint(x, descriptors)
        return fingerprint[None], self.output(fingerprint)[None]

    def train(self, mode: bool = True) -> RetNet:
        """Set training mode, keeping frozen parts (see :func:`freeze`) in eval mode."""
        super().train(mode)
        if mode and self.frozen in ("conv", "all-but-output"):
            self.features.eval()
        if mode and self.frozen == "all-but-output":
            self.head.eval()
        return self


def check_descriptors(n_descriptors: int, batch: int, descriptors: torch.Tensor | None) -> None:
    """Raise ValueError unless ``descriptors`` is (batch, n_descriptors), or None for a grid-only model."""
    if n_descriptors == 0:
        if descriptors is not None:
            raise ValueError("this RetNet reads no descriptors, but descriptors were given")
        return
    if descriptors is None:
        raise ValueError(f"this RetNet reads {n_descriptors} crystal descriptor(s) beside the grid; none were given")
    if descriptors.dim() != 2 or tuple(descriptors.shape) != (batch, n_descriptors):
        raise ValueError(f"expected descriptors of shape ({batch}, {n_descriptors}), got {tuple(descriptors.shape)}")


#: Grids per fused ensemble pass on CPU (see :class:`RetNetEnsemble`); other devices take the whole batch.
CPU_FUSED_CHUNK = 4


def _channels_last(weight: torch.Tensor) -> torch.Tensor:
    """A copy of a 5-d weight in channels-last strides (explicit strides even when it has one input channel)."""
    return torch.empty_like(weight, memory_format=torch.channels_last_3d).copy_(weight)


@dataclass(frozen=True)
class _FusedConv:
    """The members' Conv3d at one depth, BatchNorm3d folded in, as one (grouped) Conv3d over their channels."""

    weight: torch.Tensor
    bias: torch.Tensor
    groups: int
    stride: tuple[int, ...]
    padding: tuple[int, ...] | int
    dilation: tuple[int, ...]
    circular_pad: tuple[int, ...] | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.circular_pad is not None:
            x = F.pad(x, self.circular_pad, mode="circular")
        return F.conv3d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


@dataclass(frozen=True)
class _FusedLinear:
    """The members' Linear at one depth, BatchNorm1d folded in, as a batched matmul over (n, B, in)."""

    weight: torch.Tensor  # (n, in, out)
    bias: torch.Tensor  # (n, 1, out)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


#: One fused layer: a convolution, a batched Linear, a LeakyReLU (its negative slope) or a stateless pool.
_FusedLayer = _FusedConv | _FusedLinear | float | nn.Module


def _versions(tensors: Sequence[torch.Tensor]) -> tuple[tuple[int, int], ...] | None:
    """(data pointer, version counter) of each tensor; None for inference tensors, which have no counter."""
    try:
        return tuple((t.data_ptr(), t._version) for t in tensors)
    except RuntimeError:
        return None


@dataclass(frozen=True)
class _FusedWeights:
    """Everything one fused eval-mode pass of a :class:`RetNetEnsemble` needs.

    Attributes
    ----------
    features : tuple
        ``.features`` in order, a :class:`_FusedConv` per Conv3d + BatchNorm3d.
    head : tuple
        ``.head`` after its Flatten (Dropout is the identity in eval mode), a :class:`_FusedLinear` per
        Linear + BatchNorm1d.
    output : _FusedLinear
        The members' ``.output`` layers.
    descriptor : torch.Tensor or None
        (n, m, 84): the members' ``descriptor_input`` weights, transposed, with the BatchNorm1d after the head's
        first Linear folded in (its scale; the shift is in that Linear's fused bias); None for grid-only members.
    sources : tuple of torch.Tensor
        The parameters and buffers the weights were built from.
    versions : tuple or None
        Their data pointers and version counters at build time; None: untrackable, never cached.
    """

    features: tuple[_FusedLayer, ...]
    head: tuple[_FusedLayer, ...]
    output: _FusedLinear
    descriptor: torch.Tensor | None = None
    sources: tuple[torch.Tensor, ...] = ()
    versions: tuple[tuple[int, int], ...] | None = None

    def is_current(self) -> bool:
        """Whether no source tensor was modified in place or moved since the build."""
        return self.versions is not None and _versions(self.sources) == self.versions

    def __call__(self, x: torch.Tensor, inplace: bool, descriptors: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, 25, 25, 25) [+ (B, m) descriptors] → fingerprints (n, B, 20) and predictions (n, B, k)."""
        maps = _apply_fused(self.features, x, inplace)
        n_members = self.output.weight.shape[0]
        flat = maps.contiguous().reshape(len(x), n_members, -1).transpose(0, 1)
        if self.descriptor is None:
            fingerprints = _apply_fused(self.head, flat, inplace)
        else:  # the head's first fused layer is the Linear the descriptors join (checked by _fuse_members)
            joined = self.head[0](flat) + torch.matmul(descriptors[None], self.descriptor)  # type: ignore[index,operator]
            fingerprints = _apply_fused(self.head[1:], joined, inplace)
        return fingerprints, self.output(fingerprints)


def _apply_fused(layers: Sequence[_FusedLayer], x: torch.Tensor, inplace: bool) -> torch.Tensor:
    """Run fused layers in order; a float is a LeakyReLU with that negative slope."""
    for layer in layers:
        if isinstance(layer, float):
            x = F.leaky_relu(x, layer, inplace=inplace)
        else:
            x = layer(x)
    return x


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``x * scale + shift`` per channel."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fuse a BatchNorm without running statistics")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _fuse_conv(convs: Sequence[nn.Conv3d], bns: Sequence[nn.BatchNorm3d], shared_input: bool) -> _FusedConv:
    """Concatenate the members' Conv3d + BatchNorm3d along the output channels.

    With ``shared_input`` (the first layer: every member reads the same grid) this is one ordinary
    convolution with n × out channels; otherwise member i reads only its own channel block (groups = n).
    The weight is stored channels-last, which keeps every activation channels-last: on CPU that is the
    fast layout for grouped convolutions and max-pooling.
    """
    first = convs[0]
    if first.padding_mode not in ("zeros", "circular") or isinstance(first.padding, str):
        raise ValueError(f"cannot fuse convolutions with padding {first.padding!r} ({first.padding_mode})")
    weights, biases = [], []
    for conv, bn in zip(convs, bns, strict=True):
        if conv.groups != 1:
            raise ValueError("cannot fuse grouped member convolutions")
        scale, shift = _bn_scale_shift(bn)
        weights.append(conv.weight * scale.view(-1, 1, 1, 1, 1))
        biases.append(shift if conv.bias is None else conv.bias * scale + shift)
    circular = first.padding_mode == "circular"
    return _FusedConv(
        weight=_channels_last(torch.cat(weights)),
        bias=torch.cat(biases),
        groups=1 if shared_input else len(convs),
        stride=first.stride,
        padding=0 if circular else first.padding,
        dilation=first.dilation,
        circular_pad=tuple(first._reversed_padding_repeated_twice) if circular else None,
    )


def _fuse_linear(linears: Sequence[nn.Linear], bns: Sequence[nn.BatchNorm1d] | None = None) -> _FusedLinear:
    """Stack the members' Linear (+ BatchNorm1d) layers: weight (n, in, out), bias (n, 1, out)."""
    weights, biases = [], []
    for i, linear in enumerate(linears):
        weight = linear.weight
        bias = linear.bias if linear.bias is not None else weight.new_zeros(weight.shape[0])
        if bns is not None:
            scale, shift = _bn_scale_shift(bns[i])
            weight, bias = weight * scale[:, None], bias * scale + shift
        weights.append(weight.t())
        biases.append(bias[None, :])
    return _FusedLinear(torch.stack(weights), torch.stack(biases))


def _fuse_sequence(stacks: Sequence[nn.Sequential], *, shared_input: bool) -> tuple[_FusedLayer, ...]:
    """Fuse the members' copies of one Sequential layer by layer; a BatchNorm joins the Conv/Linear before it."""
    layers = [list(stack) for stack in stacks]
    if len({tuple(type(module) for module in stack) for stack in layers}) != 1:
        raise ValueError("cannot fuse members with different layers")
    fused: list[_FusedLayer] = []
    position, first = 0, layers[0]
    while position < len(first):
        module, column = first[position], [stack[position] for stack in layers]
        if isinstance(module, nn.Conv3d | nn.Linear):
            bn_type = nn.BatchNorm3d if isinstance(module, nn.Conv3d) else nn.BatchNorm1d
            has_bn = position + 1 < len(first) and isinstance(first[position + 1], bn_type)
            bns = [stack[position + 1] for stack in layers] if has_bn else None
            if isinstance(module, nn.Conv3d):
                if bns is None:
                    raise ValueError("cannot fuse a Conv3d without a BatchNorm3d after it")
                fused.append(_fuse_conv(column, bns, shared_input))  # type: ignore[arg-type]
                shared_input = False
            else:
                fused.append(_fuse_linear(column, bns))  # type: ignore[arg-type]
            position += 2 if has_bn else 1
            continue
        if isinstance(module, nn.LeakyReLU):
            fused.append(float(module.negative_slope))
        elif isinstance(module, nn.MaxPool3d):
            fused.append(module)
        elif not isinstance(module, nn.Dropout | nn.Flatten):  # identity in eval mode / done by _FusedWeights
            raise ValueError(f"cannot fuse a {type(module).__name__} layer")
        position += 1
    return tuple(fused)


def _fuse_members(members: Sequence[RetNet], sources: tuple[torch.Tensor, ...] = ()) -> _FusedWeights:
    """Build the fused layers of an ensemble's members (differentiable when grad mode is on)."""
    if not isinstance(members[0].head[0], nn.Flatten):
        raise ValueError("cannot fuse a head that does not start with Flatten")
    descriptor = None
    if members[0].descriptor_input is not None:
        head = members[0].head
        if not (isinstance(head[1], nn.Dropout) and isinstance(head[DESCRIPTOR_JOIN], nn.Linear)
                and isinstance(head[DESCRIPTOR_JOIN + 1], nn.BatchNorm1d)):
            raise ValueError("cannot fuse descriptor inputs: the head's layers are not Flatten, Dropout, Linear, "
                             "BatchNorm1d")
        descriptor = torch.stack([m.descriptor_input.weight.t() * _bn_scale_shift(m.head[DESCRIPTOR_JOIN + 1])[0]
                                  for m in members])  # type: ignore[union-attr]
    return _FusedWeights(
        features=_fuse_sequence([m.features for m in members], shared_input=True),
        head=_fuse_sequence([m.head for m in members], shared_input=False),
        output=_fuse_linear([m.output for m in members]),
        descriptor=descriptor,
        sources=sources,
        versions=_versions(sources) if sources else None,
    )


def _drop_fused_cache(module: nn.Module, incompatible_keys: object) -> None:
    """load_state_dict post-hook: new weights invalidate the fused layers."""
    if isinstance(module, RetNetEnsemble):
        module.invalidate_fused()


class RetNetEnsemble(nn.Module):
    """The average of several RetNets sharing one input standardization (e.g. training seeds).

    In eval mode the n members run as **one fused pass**: at each depth their convolutions become one
    convolution over the concatenated channels (the first reads the shared grid with n × 12 output
    channels, the others are grouped, groups = n), their Linear layers one batched matmul, every eval-mode
    BatchNorm is folded into the layer before it, and activations are channels-last. It equals the
    member-by-member average up to float rounding. The fused weights are built on the first eval call under
    ``torch.no_grad`` / ``torch.inference_mode`` and cached; the cache is rebuilt when a parameter or
    buffer is modified in place (version counters: optimizer steps, ``copy_``) or moved, and dropped by
    ``train()``, ``load_state_dict`` and ``.to`` / ``.cuda`` / ``.double``. (After *assigning new*
    Parameter objects to a member, call :meth:`invalidate_fused`.) With grad mode on the fused weights are
    rebuilt, differentiably, on every call. In training mode, or with ``fused = False``, the members run
    one after another (:meth:`forward_members`). The state dict is the members', unchanged.

    Parameters
    ----------
    members : sequence of RetNet
        Models with the same number of outputs.
    fused : bool
        Use the fused eval-mode pass (default True).
    fused_chunk : int, optional
        Grids per fused pass. Default: :data:`CPU_FUSED_CHUNK` (4) for inputs on the CPU, where larger
        chunks are slower (their activations, about 10 MB per grid for 5 members, outgrow the caches and
        the allocator's reusable heap), and the whole batch on other devices.

    Attributes
    ----------
    members : nn.ModuleList
    n_outputs : int
    n_descriptors : int
        Crystal descriptors every member reads beside the grid (0: grid-only members).
    fused : bool
        False: always run the members one after another (the legacy path).
    fused_chunk : int or None

    Examples
    --------
    >>> import torch
    >>> ensemble = RetNetEnsemble([RetNet(), RetNet()]).eval()
    >>> ensemble(torch.rand(3, 1, 25, 25, 25)).shape
    torch.Size([3, 1])
    >>> ensemble.member_predictions(torch.rand(3, 1, 25, 25, 25)).shape
    torch.Size([2, 3, 1])
    """

    def __init__(self, members: Sequence[RetNet], *, fused: bool = True, fused_chunk: int | None = None) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        outputs = {m.n_outputs for m in members}
        if len(outputs) != 1:
            raise ValueError(f"ensemble members disagree on the number of outputs: {sorted(outputs)}")
        descriptors = {m.n_descriptors for m in members}
        if len(descriptors) != 1:
            raise ValueError(f"ensemble members disagree on the number of descriptors: {sorted(descriptors)}")
        if fused_chunk is not None and fused_chunk < 1:
            raise ValueError(f"fused_chunk must be >= 1, got {fused_chunk}")
        self.members = nn.ModuleList(members)
        self.n_outputs = members[0].n_outputs
        self.n_descriptors = members[0].n_descriptors
        self.fused = bool(fused)
        self.fused_chunk = fused_chunk
        self._fused_cache: _FusedWeights | None = None
        self.register_load_state_dict_post_hook(_drop_fused_cache)

    def forward(self, x: torch.Tensor, descriptors: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of the members' predictions: (B, 1, 25, 25, 25) [+ (B, m) descriptors] → (B, k)."""
        if self.uses_fused():
            return self._fused_pass(x, descriptors)[1].mean(dim=0)
        return self.forward_members(x, descriptors)

    def forward_members(self, x: torch.Tensor, descriptors: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of the members' predictions, the members run one after another (the legacy path)."""
        return torch.stack([member(x, descriptors) for member in self.members]).mean(dim=0)

    def member_predictions(self, x: torch.Tensor, descriptors: torch.Tensor | None = None) -> torch.Tensor:
        """Every member's predictions: (B, 1, 25, 25, 25) → (n_members, B, k), e.g. for their spread."""
        if self.uses_fused():
            return self._fused_pass(x, descriptors)[1]
        return torch.stack([member(x, descriptors) for member in self.members])

    def member_fingerprints(self, x: torch.Tensor, descriptors: torch.Tensor | None = None) -> torch.Tensor:
        """Every member's fingerprint: (B, 1, 25, 25, 25) → (n_members, B, 20)."""
        if self.uses_fused():
            return self._fused_pass(x, descriptors)[0]
        return torch.stack([member.fingerprint(x, descriptors) for member in self.members])

    def member_outputs(self, x: torch.Tensor, descriptors: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's fingerprints (n_members, B, 20) and predictions (n_members, B, k) in one pass."""
        if self.uses_fused():
            return self._fused_pass(x, descriptors)
        pairs = [member.member_outputs(x, descriptors) for member in self.members]
        return torch.cat([f for f, _ in pairs]), torch.cat([p for _, p in pairs])

    def fingerprint(self, x: torch.Tensor, descriptors: torch.Tensor | None = None) -> torch.Tensor:
        """The first member's 20-dimensional fingerprint (members' fingerprint spaces differ)."""
        return self.members[0].fingerprint(x, descriptors)

    def uses_fused(self) -> bool:
        """Whether a call now takes the fused path: ``fused`` is set and every layer is in eval mode."""
        return self.fused and not any(module.training for module in self.modules())

    def invalidate_fused(self) -> None:
        """Drop the cached fused weights; the next eval call rebuilds them."""
        self._fused_cache = None

    def train(self, mode: bool = True) -> RetNetEnsemble:
        """Set training mode (members as :meth:`RetNet.train`); entering training drops the fused weights.

        ``train(False)`` (= ``eval()``, as every predict call does to restore the mode) keeps them: they are
        checked against the weights' version counters anyway.
        """
        if mode:
            self.invalidate_fused()
        return super().train(mode)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> RetNetEnsemble:
        """Every device/dtype move (``.to``, ``.cuda``, ``.double`` ...) drops the fused weights."""
        self.invalidate_fused()
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, object]:
        state = super().__getstate__()
        state["_fused_cache"] = None
        return state

    def _fused_weights(self) -> _FusedWeights:
        """The cached fused weights, rebuilt if stale; built fresh and differentiable under grad mode."""
        if torch.is_grad_enabled():
            return _fuse_members(self.members)  # type: ignore[arg-type]
        cache = self._fused_cache
        if cache is None or not cache.is_current():
            cache = _fuse_members(self.members, (*self.parameters(), *self.buffers()))  # type: ignore[arg-type]
            self._fused_cache = cache if cache.versions is not None else None
        return cache

    def _chunk_size(self, x: torch.Tensor) -> int:
        if self.fused_chunk is not None:
            return self.fused_chunk
        return CPU_FUSED_CHUNK if x.device.type == "cpu" else max(len(x), 1)

    def _fused_pass(self, x: torch.Tensor, descriptors: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All members in one pass per chunk of grids: fingerprints (n, B, 20) and predictions (n, B, k)."""
        self.members[0]._check_input(x, descriptors)
        weights = self._fused_weights()
        inplace = not torch.is_grad_enabled()
        size = self._chunk_size(x)
        described = descriptors.split(size) if descriptors is not None else [None] * len(x.split(size))
        parts = [weights(chunk, inplace, d) for chunk, d in zip(x.split(size), described, strict=True)]
        if len(parts) == 1:
            return parts[0]
        return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)


def freeze(model: RetNet, mode: FreezeMode) -> RetNet:
    """Freeze parts of a RetNet for fine-tuning (in place; returns the model).

    Parameters
    ----------
    model : RetNet
    mode : {None, "conv", "all-but-output"}
        None: everything trainable. "conv": ``.features`` frozen, i.e. no gradients
        and its BatchNorm running statistics kept (the stack stays in eval mode under
        ``model.train()``). "all-but-output": ``.features``, ``.head`` (and a descriptor
        input) frozen the same way (so the head's dropout is off too); only ``.output`` trains.

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
        if model.descriptor_input is not None:
            frozen_parts.append(model.descriptor_input)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    for part in frozen_parts:
        for parameter in part.parameters():
            parameter.requires_grad_(False)
    model.frozen = mode
    model.train(model.training)
    return model
