"""Unit tests for models.artifacts: save/load round trips, integrity and compatibility checks."""

from __future__ import annotations

import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifacts import (
    CorruptModelError,
    IncompatibleModelError,
    LoadedModel,
    ModelCard,
    Target,
    load_model,
    save_model,
    shipped_model_dir,
)
from models.metrics import regression_metrics
from models.params import VoxelParams
from models.retnet import RetNet
from models.training import TrainConfig, TrainResult, predict_grids, train_retnet
from models.transforms import Standardizer

CH4 = Target(name="ch4_uptake", unit="mol/kg", property="CH4 uptake, 298 K, 5.8 bar")


def _grids(n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.exp(-rng.normal(size=(n, 25, 25, 25))).astype(np.float32)


def _result(k: int = 1) -> TrainResult:
    torch.manual_seed(0)
    model = RetNet(n_outputs=k)
    model.train()
    with torch.no_grad():  # move BatchNorm running statistics away from their defaults
        model(torch.randn(4, 1, 25, 25, 25))
    return TrainResult(model=model.eval(), standardizer=Standardizer(mean=1.2, std=0.8), best_epoch=1)


def _card(**overrides: object) -> ModelCard:
    return ModelCard(**({"name": "retnet-ch4", "version": "1", "targets": [CH4]} | overrides))


def test_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    result = _result()
    y = np.array([1.0, 2.0, 3.0, 4.5])
    card = _card(metrics={"test": regression_metrics(y, y + 0.1, n_boot=50)}, training_data={"size": 4})
    folder = save_model(tmp_path / "m", result, card)
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "weights.pt"]
    stored = json.loads((folder / "card.json").read_text())
    assert stored["standardization"] == {"mean": 1.2, "std": 0.8}
    assert stored["metrics"]["test"]["r2"].keys() == {"value", "ci_low", "ci_high"}
    assert set(stored["library_versions"]) >= {"torch", "numpy", "python", "retnet-service"}
    assert len(stored["weights_sha256"]) == 64 and stored["training_config"]["epochs"] == 50

    loaded = load_model(folder, device="cpu")
    grids = _grids()
    expected = predict_grids(result.model, result.standardizer, grids)
    assert isinstance(loaded, LoadedModel) and loaded.ref == "retnet-ch4:1"
    assert np.array_equal(loaded.predict(grids), expected)
    assert loaded.predict(grids[0]).shape == (1, 1)
    assert loaded.fingerprints(grids).shape == (4, 20)
    assert loaded.unit == "mol/kg" and loaded.property == "CH4 uptake, 298 K, 5.8 bar"
    assert loaded.standardizer == result.standardizer and loaded.device == torch.device("cpu")
    assert not loaded.model.training
    assert loaded.card.created_at.tzinfo is not None


@pytest.mark.parametrize("fmt", ["zip", "gztar"])
def test_archives_load_like_folders(tmp_path: Path, fmt: str) -> None:
    folder = save_model(tmp_path / "m", _result(), _card())
    archive = Path(shutil.make_archive(str(tmp_path / "packed"), fmt, root_dir=tmp_path, base_dir="m"))
    grids = _grids(2)
    assert np.array_equal(load_model(archive, device="cpu").predict(grids), load_model(folder).predict(grids))


def test_fine_tuned_multi_output_model_round_trip(tmp_path: Path) -> None:
    grids = _grids(6)
    targets = np.stack([grids.mean(axis=(1, 2, 3)), grids.max(axis=(1, 2, 3))], axis=1)
    cfg = TrainConfig(epochs=1, batch_size=3, device="cpu", freeze="conv")
    result = train_retnet(grids, targets, cfg, base_model=_result())
    targets_meta = [CH4, Target(name="max_bf", unit="1", property="max Boltzmann factor")]
    loaded = load_model(save_model(tmp_path / "m2", result, _card(targets=targets_meta)))
    assert loaded.card.n_outputs == 2 and loaded.unit == "mol/kg, 1"
    assert np.array_equal(loaded.predict(grids), predict_grids(result.model, result.standardizer, grids))
    again = train_retnet(grids, targets, cfg, base_model=loaded)  # fine-tune from a LoadedModel
    assert again.standardizer == loaded.standardizer


def test_tampered_weights_raise_corrupt(tmp_path: Path) -> None:
    folder = save_model(tmp_path / "m", _result(), _card())
    data = bytearray((folder / "weights.pt").read_bytes())
    data[-100] ^= 0xFF
    (folder / "weights.pt").write_bytes(bytes(data))
    with pytest.raises(CorruptModelError, match="sha256"):
        load_model(folder)
    (folder / "weights.pt").unlink()
    with pytest.raises(CorruptModelError, match="missing weights.pt"):
        load_model(folder)
    (folder / "card.json").write_text("{not json")
    with pytest.raises(CorruptModelError, match="card"):
        load_model(folder)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "absent")


def test_unsafe_archive_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../card.json", "{}")
    with pytest.raises(CorruptModelError, match="unsafe"):
        load_model(archive)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not an archive")
    with pytest.raises(CorruptModelError):
        load_model(broken)
    assert not tarfile.is_tarfile(broken)


def test_mismatched_voxel_params_raise_incompatible(tmp_path: Path) -> None:
    loaded = load_model(save_model(tmp_path / "m", _result(), _card()))
    loaded.check_voxel_params(VoxelParams())
    loaded.check_voxel_params(VoxelParams().model_dump())
    with pytest.raises(IncompatibleModelError, match="cutoff") as info:
        loaded.check_voxel_params(VoxelParams(cutoff=12.0, temperature=77.0))
    assert isinstance(info.value, ValueError)
    assert set(info.value.differences) == {"cutoff", "temperature"}
    assert "temperature" in str(info.value) and "retnet-ch4:1" in str(info.value)


def test_card_validation_and_save_errors(tmp_path: Path) -> None:
    assert _card().n_outputs == 1 and _card().architecture == "RetNet"
    with pytest.raises(ValueError, match="n_outputs"):
        _card(n_outputs=2)
    with pytest.raises(ValueError, match="grid_size"):
        _card(voxel_params=VoxelParams(grid_size=5))
    with pytest.raises(ValueError, match="mean and std"):
        _card(standardization={"mean": 1.0})
    with pytest.raises(ValueError, match="standardization is required"):
        save_model(tmp_path / "a", RetNet(), _card())
    save_model(tmp_path / "b", RetNet(), _card(standardization={"mean": 0.0, "std": 1.0}))
    with pytest.raises(FileExistsError):
        save_model(tmp_path / "b", RetNet(), _card(standardization={"mean": 0.0, "std": 1.0}))
    with pytest.raises(ValueError, match="output"):
        save_model(tmp_path / "c", _result(k=2), _card())
    with pytest.raises(ValueError, match="differs"):
        save_model(tmp_path / "d", _result(), _card(standardization={"mean": 0.0, "std": 1.0}))


def test_extra_files_are_copied(tmp_path: Path) -> None:
    plot = tmp_path / "parity.png"
    plot.write_bytes(b"\x89PNG fake")
    folder = save_model(tmp_path / "m", _result(), _card(), extra_files={"plots/parity.png": plot})
    assert (folder / "plots" / "parity.png").read_bytes() == plot.read_bytes()
    load_model(folder)
    with pytest.raises(ValueError, match="relative path"):
        save_model(tmp_path / "n", _result(), _card(), extra_files={"../x.png": plot})


def test_shipped_model_dir() -> None:
    try:
        folder = shipped_model_dir()
    except FileNotFoundError as err:
        assert "retnet-ch4" in str(err)
    else:
        assert folder.name == "retnet-ch4" and folder.parent.name == "shipped"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        shipped_model_dir("no-such-model")


def test_ensemble_round_trip_averages_its_members(tmp_path) -> None:
    from models.retnet import RetNetEnsemble

    torch.manual_seed(0)
    members = [RetNet().eval(), RetNet().eval()]
    ensemble = RetNetEnsemble(members)
    card = ModelCard(name="ens", version="1", targets=[Target(name="y", unit="mol/kg", property="y")],
                     standardization={"mean": 1.0, "std": 2.0, "clip": 100.0})
    folder = save_model(tmp_path / "ens", ensemble, card)
    loaded = load_model(folder, device="cpu")
    assert loaded.card.ensemble_size == 2
    grids = np.random.default_rng(0).random((3, 25, 25, 25)).astype(np.float32)
    standardizer = Standardizer.from_dict(card.standardization)
    expected = np.mean([predict_grids(m, standardizer, grids) for m in members], axis=0)
    np.testing.assert_allclose(loaded.predict(grids), expected, rtol=1e-5, atol=1e-6)
    assert loaded.fingerprints(grids).shape == (3, 20)
