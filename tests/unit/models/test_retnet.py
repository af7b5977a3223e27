"""Unit tests for models.retnet: shapes, parameter count, init, freezing and the fused ensemble pass."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.retnet import FINGERPRINT_SIZE, FLAT_FEATURES, RetNet, RetNetEnsemble, freeze

SHIPPED = Path(__file__).resolve().parents[3] / "models" / "shipped" / "retnet-ch4"


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


# --- RetNetEnsemble: the fused eval-mode pass ------------------------------------------------------------

RTOL, ATOL = 1e-4, 1e-5


def _randomize(model: RetNet, seed: int) -> RetNet:
    """Random weights, BatchNorm statistics/affines and biases, so that folding and grouping are exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter + 0.05 * torch.randn(parameter.shape, generator=generator))
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm3d):
                module.running_mean.copy_(0.1 * torch.randn(module.num_features, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=generator))
    return model


def _ensemble(n_members: int = 3, k: int = 1, **kwargs: object) -> RetNetEnsemble:
    torch.manual_seed(n_members * 10 + k)
    members = [_randomize(RetNet(n_outputs=k), seed) for seed in range(n_members)]
    return RetNetEnsemble(members, **kwargs).eval()  # type: ignore[arg-type]


def _loop(ensemble: RetNetEnsemble, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The member-by-member reference: mean prediction (B, k) and fingerprints (n, B, 20)."""
    with torch.no_grad():
        return (
            torch.stack([m(x) for m in ensemble.members]).mean(dim=0),
            torch.stack([m.fingerprint(x) for m in ensemble.members]),
        )


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("fused_chunk", [None, 3])
def test_fused_pass_equals_member_loop(k: int, batch: int, fused_chunk: int | None) -> None:
    ensemble = _ensemble(n_members=3, k=k, fused_chunk=fused_chunk)
    x = torch.randn(batch, 1, 25, 25, 25, generator=torch.Generator().manual_seed(batch))
    expected, expected_fingerprints = _loop(ensemble, x)
    assert ensemble.uses_fused()
    with torch.inference_mode():
        predicted = ensemble(x)
        fingerprints = ensemble.member_fingerprints(x)
        members = ensemble.member_predictions(x)
        legacy = ensemble.forward_members(x)
    assert predicted.shape == (batch, k) and fingerprints.shape == (3, batch, FINGERPRINT_SIZE)
    assert members.shape == (3, batch, k)
    torch.testing.assert_close(predicted, expected, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(fingerprints, expected_fingerprints, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(members.mean(dim=0), expected, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(legacy, expected, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(ensemble.fingerprint(x), expected_fingerprints[0], rtol=0, atol=0)


def test_fused_pass_is_cached_and_rebuilt_after_weight_changes() -> None:
    ensemble = _ensemble(n_members=2)
    x = torch.randn(2, 1, 25, 25, 25, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = ensemble(x)
        cache = ensemble._fused_cache
        assert cache is not None
        ensemble(x)
        assert ensemble._fused_cache is cache  # reused while nothing changes

        ensemble.members[1].output.bias.add_(1.0)  # in place, e.g. an optimizer step
        changed = ensemble(x)
    assert ensemble._fused_cache is not cache
    torch.testing.assert_close(changed, before + 0.5, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(changed, _loop(ensemble, x)[0], rtol=RTOL, atol=ATOL)

    with torch.no_grad():  # a BatchNorm buffer, deep inside the convolutions
        ensemble.members[0].features[4].running_var.mul_(2.0)
        torch.testing.assert_close(ensemble(x), _loop(ensemble, x)[0], rtol=RTOL, atol=ATOL)

    other = _ensemble(n_members=2, k=1)
    for member, seed in zip(other.members, (7, 8), strict=True):
        _randomize(member, seed)
    ensemble.load_state_dict(other.state_dict())
    assert ensemble._fused_cache is None
    with torch.no_grad():
        torch.testing.assert_close(ensemble(x), other.forward_members(x), rtol=RTOL, atol=ATOL)


def test_train_and_device_moves_drop_the_cache() -> None:
    ensemble = _ensemble(n_members=2)
    x = torch.randn(3, 1, 25, 25, 25, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ensemble(x)
    assert ensemble._fused_cache is not None
    ensemble.train()
    assert ensemble._fused_cache is None and not ensemble.uses_fused()
    ensemble.eval()
    with torch.no_grad():
        ensemble(x)
    ensemble.to(torch.float64)
    assert ensemble._fused_cache is None
    with torch.no_grad():
        doubled = ensemble(x.double())
    assert doubled.dtype == torch.float64
    torch.testing.assert_close(doubled, _loop(ensemble, x.double())[0], rtol=1e-10, atol=1e-10)


def test_train_mode_keeps_the_member_loop() -> None:
    ensemble = _ensemble(n_members=3).train()
    x = torch.randn(4, 1, 25, 25, 25, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    out = ensemble(x)
    torch.manual_seed(0)
    legacy = ensemble.forward_members(x)
    torch.testing.assert_close(out, legacy, rtol=0, atol=0)  # same dropout masks, same batch statistics
    assert ensemble._fused_cache is None
    out.sum().backward()
    assert all(p.grad is not None for p in ensemble.parameters())
    # a frozen member part stays in eval mode, but the ensemble as a whole is training: still the loop
    freeze(ensemble.members[0], "conv")
    assert not ensemble.uses_fused()


def test_fused_false_and_single_members_in_train_mode_take_the_loop() -> None:
    ensemble = _ensemble(n_members=2, fused=False)
    x = torch.randn(2, 1, 25, 25, 25, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ensemble(x), _loop(ensemble, x)[0], rtol=0, atol=0)
    assert ensemble._fused_cache is None
    ensemble.fused = True
    ensemble.members[1].train()
    assert not ensemble.uses_fused()


def test_fused_pass_under_grad_mode_is_differentiable_and_uncached() -> None:
    ensemble = _ensemble(n_members=2)
    x = torch.randn(2, 1, 25, 25, 25, generator=torch.Generator().manual_seed(5), requires_grad=True)
    ensemble(x).sum().backward()
    fused_input_grad = x.grad.clone()
    fused_weight_grad = ensemble.members[1].features[0].weight.grad.clone()
    assert ensemble._fused_cache is None
    ensemble.zero_grad()
    x.grad = None
    ensemble.forward_members(x).sum().backward()
    torch.testing.assert_close(fused_input_grad, x.grad, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(fused_weight_grad, ensemble.members[1].features[0].weight.grad, rtol=1e-3, atol=1e-5)


def test_state_dict_copy_and_errors() -> None:
    ensemble = _ensemble(n_members=2)
    keys = list(ensemble.state_dict())
    x = torch.randn(2, 1, 25, 25, 25, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = ensemble(x)
    assert list(ensemble.state_dict()) == keys
    assert all(key.startswith("members.") for key in keys)
    clone = copy.deepcopy(ensemble)
    assert clone._fused_cache is None
    with torch.no_grad():
        torch.testing.assert_close(clone(x), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\(2, 1, 24, 24, 24\)"), torch.no_grad():
        ensemble(torch.zeros(2, 1, 24, 24, 24))
    with pytest.raises(ValueError, match="fused_chunk"):
        RetNetEnsemble([RetNet()], fused_chunk=0)


@pytest.mark.skipif(not (SHIPPED / "weights.pt").is_file(), reason="shipped weights not present")
def test_shipped_ensemble_fused_equals_legacy() -> None:
    from models.artifacts import load_model

    loaded = load_model(SHIPPED, device="cpu")
    assert isinstance(loaded.model, RetNetEnsemble) and len(loaded.model.members) == loaded.card.ensemble_size > 1
    rng = np.random.default_rng(0)
    grids = np.exp(-rng.normal(700.0, 700.0, size=(3, 25, 25, 25)) / 298.0).astype(np.float32)
    densities = [0.5, 1.0, 1.5]  # g/cm³, for a model that reads the crystal density
    blocks = {b: np.array([[-1.0, 12.0], [-0.5, 15.0], [0.2, 20.0]]) for b in loaded.crystal_blocks}  # ch4_widom
    fused = loaded.predict(grids, densities_g_cm3=densities, crystal_blocks=blocks)
    loaded.model.fused = False
    legacy = loaded.predict(grids, densities_g_cm3=densities, crystal_blocks=blocks)
    np.testing.assert_allclose(fused, legacy, rtol=0, atol=1e-5)
