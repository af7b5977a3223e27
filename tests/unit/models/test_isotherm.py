"""Unit tests for models.isotherm: the monotone head, RetNetIsotherm on a RetNet backbone, deliverable capacity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.isotherm import (
    DEFAULT_PRESSURES_BAR,
    MonotoneHead,
    RetNetIsotherm,
    deliverable_capacity,
    monotone_from_raw,
    pressure_index,
    raw_from_monotone,
)
from models.retnet import RetNet, freeze

PRESSURES = (1.0, 5.8, 35.0, 65.0)


def _grids(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 25, 25, 25, generator=generator)


# --- the monotone transform -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_monotone_for_random_raw_values_of_any_scale(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(1)
    for scale in (1e-3, 1.0, 30.0, 1e4):
        raw = torch.randn(512, 6, generator=generator, dtype=dtype) * scale
        out = monotone_from_raw(raw)
        assert out.shape == raw.shape and out.dtype == dtype
        assert torch.isfinite(out).all()
        assert (out[:, 1:] >= out[:, :-1]).all(), f"decreasing at scale {scale}"
        assert torch.equal(out[:, 0], raw[:, 0])  # the first value is the raw first value


def test_monotone_transform_by_hand() -> None:
    raw = torch.tensor([[0.5, 0.0, 2.0]], dtype=torch.float64)
    # 0.5, then + softplus(0) = ln 2, then + softplus(2) = ln(1 + e²)
    expected = torch.tensor([[0.5, 0.5 + np.log(2.0), 0.5 + np.log(2.0) + np.log1p(np.exp(2.0))]], dtype=torch.float64)
    torch.testing.assert_close(monotone_from_raw(raw), expected)
    with pytest.raises(ValueError, match="k >= 1"):
        monotone_from_raw(torch.zeros(3, 0))


def test_raw_from_monotone_inverts_and_flattens_decreases() -> None:
    curve = torch.tensor([[0.1, 0.7, 2.9, 4.1], [1.0, 1.0, 1.5, 3.0]], dtype=torch.float64)
    back = monotone_from_raw(raw_from_monotone(curve))
    torch.testing.assert_close(back, curve, atol=1e-5, rtol=0)  # a flat step becomes MIN_INIT_INCREMENT
    bumpy = torch.tensor([0.5, 0.3, 1.0], dtype=torch.float64)  # not monotone: running maximum 0.5, 0.5, 1.0
    torch.testing.assert_close(monotone_from_raw(raw_from_monotone(bumpy)), torch.tensor([0.5, 0.5, 1.0],
                               dtype=torch.float64), atol=1e-5, rtol=0)


# --- MonotoneHead -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_head_is_monotone_for_random_weights_and_inputs(seed: int) -> None:
    torch.manual_seed(seed)
    head = MonotoneHead(20, 4)
    with torch.no_grad():  # random weights and biases far from the initialisation
        head.linear.weight.normal_(0.0, 10.0 ** (seed - 2))
        head.linear.bias.normal_(0.0, 5.0)
    features = torch.randn(256, 20) * 10.0 ** (seed - 2)
    out = head(features)
    assert out.shape == (256, 4)
    assert (out.diff(dim=1) >= 0).all()


@pytest.mark.parametrize(("batch", "k"), [(2, 1), (5, 2), (3, 4), (7, 9)])
def test_head_shapes(batch: int, k: int) -> None:
    out = MonotoneHead(20, k)(torch.randn(batch, 20))
    assert out.shape == (batch, k)
    with pytest.raises(ValueError):
        MonotoneHead(20, 0)


def test_head_init_bias_starts_at_the_mean_curve() -> None:
    head = MonotoneHead(20, 4)
    mean = [0.3, 1.2, 3.4, 4.4]
    head.init_bias(mean)
    torch.testing.assert_close(head(torch.zeros(2, 20)), torch.tensor([mean, mean]), atol=1e-5, rtol=0)
    head.init_bias(2.0)  # a scalar: a flat curve
    assert torch.allclose(head(torch.zeros(1, 20)), torch.full((1, 4), 2.0), atol=1e-4)
    with pytest.raises(ValueError, match="expected 4"):
        head.init_bias([1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        head.init_bias([1.0, float("nan"), 2.0, 3.0])


# --- RetNetIsotherm ---------------------------------------------------------------------------------------


def test_isotherm_model_shapes_and_monotone_curves() -> None:
    torch.manual_seed(0)
    model = RetNetIsotherm(PRESSURES).eval()
    assert model.n_outputs == 4 and model.pressures_bar == PRESSURES
    x = _grids(6)
    curves = model(x)
    assert curves.shape == (6, 4) and torch.isfinite(curves).all()
    assert (curves.diff(dim=1) >= 0).all()
    assert model.fingerprint(x).shape == (6, 20)
    fingerprints, predictions = model.member_outputs(x)
    assert fingerprints.shape == (1, 6, 20) and predictions.shape == (1, 6, 4)
    torch.testing.assert_close(predictions[0], curves)


def test_isotherm_model_is_monotone_with_random_weights_everywhere() -> None:
    torch.manual_seed(3)
    model = RetNetIsotherm(PRESSURES)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 2.0)
    model.train()  # batch statistics, dropout on
    curves = model(_grids(8, seed=3) * 50.0 - 25.0)
    assert (curves.diff(dim=1) >= 0).all()


def test_gradients_flow_to_the_head_and_the_backbone() -> None:
    torch.manual_seed(0)
    model = RetNetIsotherm(PRESSURES).train()
    target = torch.tensor([[0.2, 1.0, 3.0, 4.0]]).expand(4, 4)
    loss = torch.nn.functional.mse_loss(model(_grids(4)), target)
    loss.backward()
    head_grads = [p.grad for p in model.isotherm_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in head_grads)
    conv = model.backbone.features[0].weight
    assert conv.grad is not None and conv.grad.abs().sum() > 0
    assert model.backbone.output.weight.grad is None  # the backbone's single output is not part of the curve


def test_the_head_learns_langmuir_curves() -> None:
    torch.manual_seed(0)
    head = MonotoneHead(20, 4)
    features = torch.randn(64, 20)  # standardised fingerprints
    # made-up Langmuir isotherms q · p / (20 bar + p) with a capacity q of 1 to 5 mol/kg set by the features
    q = 1.0 + 4.0 * torch.sigmoid(features @ torch.linspace(-1.0, 1.0, 20))[:, None]
    p = torch.tensor(PRESSURES)[None, :]
    target = q * p / (20.0 + p)
    head.init_bias(target.mean(dim=0).numpy())
    optimizer = torch.optim.Adam(head.parameters(), lr=5e-2)
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(head(features), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    assert (head(features).diff(dim=1) >= 0).all()


def test_from_backbone_copies_the_trained_backbone_and_freezes() -> None:
    torch.manual_seed(0)
    base = RetNet(n_outputs=1).eval()
    model = RetNetIsotherm.from_backbone(base, PRESSURES, freeze_mode="conv").eval()
    x = _grids(3)
    torch.testing.assert_close(model.fingerprint(x), base.fingerprint(x))
    assert model.backbone is not base  # a copy: training the isotherm leaves the base model as it was
    assert not any(p.requires_grad for p in model.backbone.features.parameters())
    assert all(p.requires_grad for p in model.isotherm_head.parameters())
    model.train()
    assert not model.backbone.features.training and model.backbone.head.training  # frozen convs stay in eval
    assert all(p.requires_grad for p in base.parameters())  # the base model is untouched
    model.freeze_backbone("all-but-output")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable >= {"isotherm_head.linear.weight", "isotherm_head.linear.bias"}
    assert not any(name.startswith(("backbone.features", "backbone.head")) for name in trainable)


def test_from_backbone_refuses_an_ensemble_and_bad_pressures() -> None:
    from models.retnet import RetNetEnsemble

    with pytest.raises(TypeError, match="ensemble"):
        RetNetIsotherm.from_backbone(RetNetEnsemble([RetNet(), RetNet()]))
    with pytest.raises(ValueError, match="increasing"):
        RetNetIsotherm((5.8, 1.0))
    with pytest.raises(ValueError, match="positive"):
        RetNetIsotherm((0.0, 1.0))
    with pytest.raises(ValueError, match="at least one"):
        RetNetIsotherm(())


def test_backbone_shared_not_copied_when_passed_in() -> None:
    backbone = freeze(RetNet(), "conv")
    model = RetNetIsotherm(DEFAULT_PRESSURES_BAR, backbone=backbone)
    assert model.backbone is backbone
    state = model.state_dict()
    assert "backbone.features.0.weight" in state and "isotherm_head.linear.weight" in state
    restored = RetNetIsotherm(DEFAULT_PRESSURES_BAR)
    restored.load_state_dict(state)
    x = _grids(2)
    torch.testing.assert_close(restored.eval()(x), model.eval()(x))


# --- deliverable capacity ---------------------------------------------------------------------------------


def test_deliverable_capacity_numpy_and_torch() -> None:
    curves = np.array([[0.2, 1.0, 3.0, 4.5], [0.1, 0.4, 2.0, 2.2]])
    np.testing.assert_allclose(deliverable_capacity(curves, PRESSURES), [3.5, 1.8])
    np.testing.assert_allclose(deliverable_capacity(curves, PRESSURES, high=35.0, low=1.0), [2.8, 1.9])
    tensor = torch.tensor(curves)
    torch.testing.assert_close(deliverable_capacity(tensor, PRESSURES), torch.tensor([3.5, 1.8], dtype=torch.float64))
    assert deliverable_capacity(curves[0], PRESSURES) == pytest.approx(3.5)  # one curve, shape (k,)


def test_deliverable_capacity_of_a_monotone_model_is_non_negative_and_differentiable() -> None:
    torch.manual_seed(1)
    model = RetNetIsotherm(PRESSURES).train()
    capacity = deliverable_capacity(model(_grids(4)), model.pressures_bar)
    assert capacity.shape == (4,) and (capacity >= 0).all()
    capacity.sum().backward()
    assert model.isotherm_head.linear.weight.grad is not None


def test_deliverable_capacity_needs_both_pressures() -> None:
    with pytest.raises(ValueError, match="not one of the model's pressures"):
        deliverable_capacity(np.zeros((2, 3)), (1.0, 5.8, 35.0))
    with pytest.raises(ValueError, match="3 pressures"):
        deliverable_capacity(np.zeros((2, 3)), PRESSURES)
    assert pressure_index(PRESSURES, 5.8) == 1 and pressure_index(PRESSURES, 65) == 3


# --- the ensemble of monotone heads, its fitting and its artifact -------------------------------------------


def _isotherm_ensemble(n_members: int = 3, seed: int = 0):  # type: ignore[no-untyped-def]
    from models.isotherm import IsothermEnsemble
    from models.retnet import RetNetEnsemble

    torch.manual_seed(seed)
    return IsothermEnsemble(RetNetEnsemble([RetNet() for _ in range(n_members)]), PRESSURES).freeze_backbone()


def test_isotherm_ensemble_members_are_monotone_and_the_mean_is_their_average() -> None:
    model = _isotherm_ensemble().eval()
    x = _grids(5)
    with torch.no_grad():
        fingerprints, curves = model.member_outputs(x)
        mean = model(x)
    assert fingerprints.shape == (3, 5, 20) and curves.shape == (3, 5, 4)
    assert bool((curves.diff(dim=2) >= 0).all()) and bool((mean.diff(dim=1) >= 0).all())
    assert bool((curves >= 0).all())  # absolute uptakes: never negative, whatever the weights
    torch.testing.assert_close(mean, curves.mean(dim=0))
    torch.testing.assert_close(model.curves_from_fingerprints(fingerprints), curves)
    with pytest.raises(ValueError, match="fingerprints of shape"):
        model.curves_from_fingerprints(fingerprints[:2])


def test_frozen_backbone_stays_in_eval_mode_and_only_the_heads_train() -> None:
    model = _isotherm_ensemble().train()
    assert not model.backbone.training and all(h.training for h in model.heads)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("heads.") for n in trainable)


def test_fit_heads_learns_a_masked_curve_and_ignores_missing_points() -> None:
    from models.isotherm_training import HeadFitConfig, fit_heads, masked_loss

    rng = np.random.default_rng(0)
    n = 120
    fps = rng.normal(size=(2, n, 20))
    # a monotone curve linear in the first fingerprint coordinate of each member, plus missing points
    base = 2.0 + fps[0, :, 0]
    labels = np.stack([base, base + 1.0, base + 3.0, base + 4.0], axis=1)
    labels[rng.random(labels.shape) < 0.5] = np.nan
    labels[:, 1] = base + 1.0  # 5.8 bar always labelled, as in the data
    model = _isotherm_ensemble(n_members=2)
    fps[1] = fps[0]  # both members see the informative coordinate
    scales = torch.ones(4)
    with torch.no_grad():
        start = model.curves_from_fingerprints(torch.as_tensor(fps[:, 100:], dtype=torch.float32))[0]
        before = float(masked_loss(start, torch.as_tensor(labels[100:], dtype=torch.float32), scales))
    result = fit_heads(model, fps[:, :100], labels[:100], fps[:, 100:], labels[100:],
                       HeadFitConfig(epochs=1500, patience=300, seed=1))
    with torch.no_grad():
        curves = model.curves_from_fingerprints(torch.as_tensor(fps[:, 100:], dtype=torch.float32)).mean(dim=0)
    truth = np.stack([base, base + 1.0, base + 3.0, base + 4.0], axis=1)[100:]
    assert np.sqrt(np.mean((curves.numpy() - truth) ** 2)) < 0.35  # learned on the labelled points only
    assert len(result.best_epochs) == 2 and all(e > 0 for e in result.best_epochs)
    assert min(result.best_val_loss) < before
    with pytest.raises(ValueError, match="expected fingerprints"):
        fit_heads(model, fps[:, :10], labels[:9], fps[:, 100:], labels[100:])


def test_isotherm_model_saves_and_loads_with_its_pressures(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from models.artifacts import CorruptModelError, ModelCard, Target, load_model, save_model

    model = _isotherm_ensemble().eval()
    targets = [Target(name=f"ch4_uptake_{p:g}bar", unit="mol/kg", property=f"CH4 uptake, 298 K, {p:g} bar",
                      gas="CH4", temperature_k=298.0, pressure_bar=p) for p in PRESSURES]
    card = ModelCard(name="iso", version="1", architecture="RetNetIsotherm", targets=targets,
                     standardization={"mean": 0.1, "std": 0.2})
    folder = save_model(tmp_path / "iso", model, card)
    loaded = load_model(folder, device="cpu")
    assert loaded.card.pressures_bar == PRESSURES and loaded.card.ensemble_size == 3
    grids = np.random.default_rng(0).random((4, 25, 25, 25)).astype(np.float32)
    detailed = loaded.predict_detailed(grids)
    assert detailed.values.shape == (4, 4) and bool((np.diff(detailed.values, axis=1) >= 0).all())
    with torch.no_grad():
        expected = model(torch.as_tensor((grids[:, None] - 0.1) / 0.2)).double().numpy()
    np.testing.assert_allclose(detailed.values, expected, rtol=1e-4, atol=1e-5)
    # a RetNet card for these weights, or an isotherm card with pressures out of order, is refused
    with pytest.raises(ValueError, match="architecture='RetNetIsotherm'"):
        save_model(tmp_path / "wrong", model, card.model_copy(update={"architecture": "RetNet"}))
    with pytest.raises(ValueError, match="strictly increasing"):
        ModelCard(name="iso", version="2", architecture="RetNetIsotherm", targets=targets[::-1])
    (folder / "card.json").write_text((folder / "card.json").read_text().replace('"RetNetIsotherm"', '"RetNet"'))
    with pytest.raises(CorruptModelError):
        load_model(folder, device="cpu")


def test_nonnegative_head_starts_at_the_mean_curve_and_never_goes_below_zero() -> None:
    head = MonotoneHead(20, 4, nonnegative=True)
    head.init_bias([0.3, 1.0, 4.0, 6.0])
    with torch.no_grad():
        torch.testing.assert_close(head(torch.zeros(1, 20)), torch.tensor([[0.3, 1.0, 4.0, 6.0]]), rtol=1e-5,
                                   atol=1e-5)
        head.linear.bias.fill_(-40.0)  # a raw first value far below zero
        out = head(torch.randn(64, 20))
    assert bool((out >= 0).all()) and bool((out.diff(dim=1) >= 0).all())
