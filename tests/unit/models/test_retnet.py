"""Unit tests for models.retnet: shapes, parameter count, init and freezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.retnet import FINGERPRINT_SIZE, FLAT_FEATURES, RetNet, freeze


def _batch(size: int = 2) -> torch.Tensor:
    return torch.rand(size, 1, 25, 25, 25, generator=torch.Generator().manual_seed(0))


def _hand_count(k: int) -> int:
    """Parameters counted by hand from DESIGN.md §4 (conv weights, BN γ/β, Linear W/b)."""
    conv = [(1, 12, 3), (12, 24, 3), (24, 32, 2), (32, 64, 2), (64, 120, 2)]
    features = sum(cin * cout * kern**3 + 2 * cout for cin, cout, kern in conv)
    head = (3240 * 84 + 84) + 2 * 84 + (84 * 20 + 20) + 2 * 20
    return features + head + (20 * k + k)


def test_feature_and_flatten_shapes() -> None:
    model = RetNet().eval()
    with torch.no_grad():
        maps = model.features(_batch())
        flat = model.head[0](maps)
    assert maps.shape == (2, 120, 3, 3, 3)
    assert flat.shape == (2, FLAT_FEATURES) == (2, 3240)


@pytest.mark.parametrize("k", [1, 3])
def test_output_and_fingerprint_shapes(k: int) -> None:
    model = RetNet(n_outputs=k).eval()
    x = _batch(4)
    with torch.no_grad():
        assert model(x).shape == (4, k)
        assert model.fingerprint(x).shape == (4, FINGERPRINT_SIZE) == (4, 20)


@pytest.mark.parametrize("k", [1, 3])
def test_parameter_count_matches_hand_computation(k: int) -> None:
    counted = sum(p.numel() for p in RetNet(n_outputs=k).parameters())
    assert counted == _hand_count(k), f"RetNet(k={k}) has {counted} parameters, hand count {_hand_count(k)}"
    if k == 1:
        assert counted == 366_745, f"RetNet(k=1) parameter count: {counted}"


def test_layer_details() -> None:
    model = RetNet()
    convs = [m for m in model.features if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in convs] == [12, 24, 32, 64, 120]
    assert all(c.bias is None for c in convs)
    assert convs[0].padding_mode == "circular" and convs[0].padding == (1, 1, 1)
    assert sum(isinstance(m, nn.BatchNorm3d) for m in model.features) == 5
    assert all(m.negative_slope == 0.01 for m in model.modules() if isinstance(m, nn.LeakyReLU))
    assert [m.p for m in model.head if isinstance(m, nn.Dropout)] == [0.3]


def test_wrong_input_shape_is_named() -> None:
    with pytest.raises(ValueError, match=r"\(2, 1, 24, 24, 24\)"):
        RetNet()(torch.zeros(2, 1, 24, 24, 24))


def test_init_output_bias() -> None:
    model = RetNet(n_outputs=3)
    model.init_output_bias([1.0, 2.0, 3.0])
    assert model.output.bias.tolist() == [1.0, 2.0, 3.0]
    model.init_output_bias(5.0)
    assert model.output.bias.tolist() == [5.0, 5.0, 5.0]
    with pytest.raises(ValueError, match="expected 3"):
        model.init_output_bias([1.0, 2.0])
    assert RetNet().output.bias.item() == 0.0


def _backward(model: RetNet) -> None:
    model.train()
    model(_batch(3)).sum().backward()


def test_freeze_conv_leaves_feature_grads_none_and_bn_in_eval() -> None:
    model = freeze(RetNet(), "conv")
    _backward(model)
    assert all(p.grad is None and not p.requires_grad for p in model.features.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    assert all(p.grad is not None for p in model.output.parameters())
    assert not any(m.training for m in model.features.modules())
    assert model.head.training and model.output.training
    bn = model.features[1]
    before = bn.running_mean.clone()
    _backward(model)
    assert torch.equal(bn.running_mean, before)


def test_freeze_all_but_output() -> None:
    model = freeze(RetNet(), "all-but-output")
    _backward(model)
    assert all(p.grad is None for p in model.features.parameters())
    assert all(p.grad is None for p in model.head.parameters())
    assert all(p.grad is not None for p in model.output.parameters())
    assert not model.head.training


def test_freeze_none_unfreezes_and_bad_mode() -> None:
    model = freeze(freeze(RetNet(), "conv"), None)
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    assert all(m.training for m in model.modules())
    with pytest.raises(ValueError, match="unknown freeze mode"):
        freeze(model, "head")  # type: ignore[arg-type]
