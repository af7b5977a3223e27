"""The ``retnet`` command line (app.cli) and the CIF → grid pipeline behind it (models.pipeline)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
CIFS = ROOT / "tests" / "data" / "cifs"
BAD = ROOT / "tests" / "data" / "bad"

SMALL = [CIFS / "FIGXAU_clean.cif", CIFS / "SAYTUJ_clean.cif"]
TRAIN_SET = ["BUKRUW01_clean", "EDUWAB_clean", "FIGXAU_clean", "KEGZOL04_clean", "SAYTUJ_clean",
             "c5cc04223b_c5cc04223b2_clean", "FIGXAU_deuterated", "KEGZOL04_oxidation_states"]


def test_help_is_fast_and_lists_every_command() -> None:
    # A fresh interpreter: --help must not import numpy, torch or pymatgen.
    code = ("import sys; from app.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('numpy', 'torch', 'pymatgen', 'pandas') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout
    for command in ("voxelize", "train", "predict", "evaluate", "serve", "worker"):
        assert command in done.stdout


@pytest.mark.parametrize("command", ["voxelize", "train", "predict", "evaluate", "serve", "worker"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: retnet " + command in capsys.readouterr().out


def test_voxel_options_state_units() -> None:
    text = build_parser()._subparsers._group_actions[0].choices["voxelize"].format_help()  # type: ignore[union-attr]
    for unit_text in ("in Å", "ε in K", "σ in Å", "T in K", "side L Å"):
        assert unit_text in text


def test_voxelize_writes_grids_and_reports_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "grids"
    code = main(["voxelize", *map(str, SMALL), str(BAD / "unknown_element_Tc.cif"), str(BAD / "empty.cif"),
                 "--out", str(out), "--grid-size", "8"])
    err = capsys.readouterr().err
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["FIGXAU_clean.npy", "SAYTUJ_clean.npy"]
    grid = np.load(out / "FIGXAU_clean.npy")
    assert grid.shape == (8, 8, 8) and grid.dtype == np.float32
    assert "FAILED unknown_element_Tc: no UFF Lennard-Jones parameters for element(s) Tc" in err
    assert "FAILED empty: the file is empty" in err
    assert "voxelized 2 of 4 CIF(s)" in err and "2 failed" in err


def test_voxelize_options_reach_the_grid(tmp_path: Path) -> None:
    from models.params import VoxelParams
    from models.structure import load_crystal
    from models.voxels import compute_voxels

    assert main(["voxelize", str(SMALL[1]), "--out", str(tmp_path), "--grid-size", "6", "--energy",
                 "--cutoff", "12", "--probe-epsilon", "148", "--probe-sigma", "3.73", "--temperature", "77",
                 "--cubic-box", "20"]) == 0
    expected = compute_voxels(load_crystal(SMALL[1]), VoxelParams(
        grid_size=6, boltzmann=False, cutoff=12, probe_epsilon=148, probe_sigma=3.73, temperature=77, cubic_box=20))
    np.testing.assert_array_equal(np.load(tmp_path / "SAYTUJ_clean.npy"), expected)


def test_voxelize_rejects_bad_parameters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["voxelize", str(SMALL[0]), "--out", str(tmp_path), "--grid-size", "1"]) == 1
    assert "--grid-size" in capsys.readouterr().err


def test_voxelize_through_the_cache(tmp_path: Path) -> None:
    args = ["voxelize", str(SMALL[0]), "--grid-size", "6", "--cache", str(tmp_path / "cache")]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    cached = list((tmp_path / "cache").rglob("*.npy.gz"))
    assert len(cached) == 1  # the service's key layout: voxels/<params hash>/<sha[:2]>/<sha>_<params hash>.npy.gz
    from models.voxel_cache import encode_grid

    cached[0].write_bytes(encode_grid(np.full((6, 6, 6), 7.0, dtype=np.float32)))  # the second run reads the cache
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert (np.load(tmp_path / "b" / "FIGXAU_clean.npy") == 7.0).all()
    assert main([*args, "--out", str(tmp_path / "c"), "--energy"]) == 0  # other parameters: other cache entry
    assert len(list((tmp_path / "cache").rglob("*.npy.gz"))) == 2


def test_console_script_voxelize(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "app.cli", "voxelize", str(SMALL[0]), "--out", str(tmp_path),
                           "--grid-size", "5"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "voxelized 1 of 1" in done.stderr
    assert (tmp_path / "FIGXAU_clean.npy").exists()


# --- models.pipeline -----------------------------------------------------------------------------


def test_cif_sources_from_folder_zip_and_list(tmp_path: Path) -> None:
    from models.pipeline import cif_sources

    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(SMALL[0], "sub/FIGXAU_clean.cif")
        z.write(SMALL[1], "SAYTUJ_clean.CIF")
        z.writestr("__MACOSX/._FIGXAU_clean.cif", b"junk")
        z.writestr("notes.txt", b"not a cif")
    names = [s.name for s in cif_sources(archive)]
    assert names == ["SAYTUJ_clean", "FIGXAU_clean"]
    assert cif_sources(archive)[0].read() == SMALL[1].read_bytes()
    assert len(cif_sources(CIFS)) == len(list(CIFS.glob("*.cif")))
    assert [s.name for s in cif_sources(SMALL)] == ["FIGXAU_clean", "SAYTUJ_clean"]
    with pytest.raises(ValueError, match="share the name"):
        cif_sources([SMALL[0], SMALL[0]])
    with pytest.raises(FileNotFoundError):
        cif_sources(tmp_path / "nothing")


def test_voxelize_paths_collects_failures() -> None:
    from models.errors import InvalidCIFError, UnknownElementError
    from models.params import VoxelParams
    from models.pipeline import voxelize_paths

    failures: dict[str, Exception] = {}
    seen: list[tuple[str, str | None]] = []
    grids = voxelize_paths([SMALL[0], BAD / "unknown_element_Tc.cif", BAD / "not_a_cif.png"], VoxelParams(grid_size=5),
                           on_error=lambda name, exc: failures.__setitem__(name, exc),
                           progress=lambda name, error: seen.append((name, error)))
    assert list(grids) == ["FIGXAU_clean"]
    assert isinstance(failures["unknown_element_Tc"], UnknownElementError)
    assert isinstance(failures["not_a_cif"], InvalidCIFError)
    assert [name for name, _ in seen] == ["FIGXAU_clean", "unknown_element_Tc", "not_a_cif"]
    assert seen[0][1] is None and "Tc" in str(seen[1][1])
    with pytest.raises(UnknownElementError):
        voxelize_paths([BAD / "unknown_element_Tc.cif"], VoxelParams(grid_size=5))


def _labels(path: Path, names: list[str]) -> Path:
    rng = np.random.default_rng(1)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "ch4_uptake_mol_kg", "status"])
        for name in names:
            writer.writerow([name, f"{rng.uniform(0.5, 4.0):.3f}", "ok"])
        writer.writerow(["not_in_the_data", "1.0", "ok"])
        writer.writerow(["FIGXAU_disordered", "", "skipped_large"])
    return path


def test_load_training_set_pairs_grids_and_labels(tmp_path: Path) -> None:
    from models.params import VoxelParams
    from models.pipeline import load_training_set

    labels = _labels(tmp_path / "labels.csv", ["SAYTUJ_clean", "FIGXAU_clean"])
    data = load_training_set(CIFS, labels, "ch4_uptake_mol_kg", VoxelParams(grid_size=5), tmp_path / "cache")
    assert data.names == ["SAYTUJ_clean", "FIGXAU_clean"]
    assert data.grids.shape == (2, 5, 5, 5) and data.targets.shape == (2, 1)
    assert data.failures == {"not_in_the_data": "no CIF with this name in the data"}
    assert len(data.labels_sha256) == 64
    assert data.unlabelled == len(list(CIFS.glob("*.cif"))) - 2
    with pytest.raises(KeyError, match="no_such_column"):
        load_training_set(CIFS, labels, "no_such_column", VoxelParams(grid_size=5))


# --- train / predict / evaluate ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train once (1 epoch on the fixture CIFs, fake labels) through the CLI; returns the work folder."""
    work = tmp_path_factory.mktemp("train")
    archive = work / "cifs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in TRAIN_SET:
            z.write(CIFS / f"{name}.cif", f"{name}.cif")
    _labels(work / "labels.csv", TRAIN_SET)
    code = main(["train", "--data", str(archive), "--labels", str(work / "labels.csv"),
                 "--target", "ch4_uptake_mol_kg", "--out", str(work / "model"), "--epochs", "1",
                 "--val-fraction", "0.25", "--bootstrap", "100", "--cache", str(work / "cache"),
                 "--name", "cli-test", "--version", "3", "--device", "cpu", "--threads", "2"])
    assert code == 0
    return work


def test_train_saves_a_model_with_metrics_and_parity_plot(trained: Path) -> None:
    folder = trained / "model"
    assert (folder / "weights.pt").exists() and (folder / "parity.png").exists()
    card = json.loads((folder / "card.json").read_text())
    assert card["name"] == "cli-test" and card["version"] == "3"
    assert card["targets"] == [{"name": "ch4_uptake_mol_kg", "unit": "mol/kg",
                                "property": "CH4 uptake, 298 K, 5.8 bar", "gas": "CH4", "temperature_k": 298.0,
                                "pressure_bar": 5.8}]
    assert set(card["metrics"]) == {"r2", "mae", "rmse", "spearman"}
    assert set(card["metrics"]["mae"]) == {"value", "ci_low", "ci_high"}
    assert card["training_data"]["n_train"] == 6 and card["training_data"]["n_val"] == 2
    assert card["training_data"]["left_out"] == 1  # the label row without a CIF
    assert card["preliminary"] is True
    # One entry per distinct crystal (the service's key): FIGXAU_deuterated (D → H) and KEGZOL04_oxidation_states
    # (Cu1+ → Cu) are the same structures as FIGXAU_clean and KEGZOL04_clean.
    from models.structure import load_crystal

    crystals = {load_crystal(CIFS / f"{name}.cif").sha256 for name in TRAIN_SET}
    assert len(crystals) == len(TRAIN_SET) - 2
    assert len(list((trained / "cache").rglob("*.npy.gz"))) == len(crystals)


def test_predict_csv_with_a_bad_cif(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["predict", "--model", str(trained / "model"), str(SMALL[0]), str(BAD / "empty.cif"),
                 str(SMALL[1]), "--format", "csv", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert captured.out.splitlines()[0].startswith("name,value,uncertainty,in_domain,unit,")
    assert list(rows[0]) == ["name", "value", "uncertainty", "in_domain", "unit", "property", "model", "sha256",
                             "error"]
    assert [r["name"] for r in rows] == ["FIGXAU_clean", "empty", "SAYTUJ_clean"]
    assert rows[1]["value"] == "" and rows[1]["error"] == "empty: the file is empty"
    for row in (rows[0], rows[2]):
        assert np.isfinite(float(row["value"])) and row["error"] == "" and len(row["sha256"]) == 64
        assert row["unit"] == "mol/kg" and row["model"] == "cli-test:3"
    assert "1 failed" in captured.err


def test_predict_table(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--model", str(trained / "model"), str(SMALL[0]), "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "value", "uncertainty", "in_domain", "unit", "property", "error"]
    assert out[2].startswith("FIGXAU_clean")


def test_predict_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--model", "no-such-model", str(SMALL[0])]) == 1
    assert "no-such-model" in capsys.readouterr().err


def test_evaluate_prints_metrics_with_intervals(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = trained / "eval.png"
    code = main(["evaluate", "--model", str(trained / "model"), "--data", str(trained / "cifs.zip"),
                 "--labels", str(trained / "labels.csv"), "--plot", str(plot), "--bootstrap", "200",
                 "--cache", str(trained / "cache"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    for label in ("R²", "MAE", "RMSE", "Spearman ρ"):
        assert label in out
    assert out.count("95% CI [") == 4 and "mol/kg" in out
    assert plot.exists()


def test_fine_tune_from_base_model(trained: Path) -> None:
    out = trained / "tuned"
    code = main(["train", "--data", str(trained / "cifs.zip"), "--labels", str(trained / "labels.csv"),
                 "--target", "ch4_uptake_mol_kg", "--out", str(out), "--epochs", "1", "--val-fraction", "0",
                 "--base-model", str(trained / "model"), "--freeze", "conv", "--cache", str(trained / "cache"),
                 "--device", "cpu", "--no-augment"])
    assert code == 0
    card = json.loads((out / "card.json").read_text())
    assert card["training_data"]["base_model"] == "cli-test:3"
    assert card["metrics"] == {}


def test_train_predict_and_evaluate_a_descriptor_model(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--descriptors: the card records them; predict and evaluate compute them from each CIF and its grid."""
    out = trained / "described"
    code = main(["train", "--data", str(trained / "cifs.zip"), "--labels", str(trained / "labels.csv"),
                 "--target", "ch4_uptake_mol_kg", "--out", str(out), "--epochs", "1", "--val-fraction", "0.25",
                 "--bootstrap", "50", "--descriptors", "log_density", "energy_histogram",
                 "--cache", str(trained / "cache"), "--device", "cpu", "--name", "described", "--version", "1"])
    assert code == 0
    card = json.loads((out / "card.json").read_text())
    assert card["descriptors"]["names"] == ["log_density", "energy_histogram"]
    assert len(card["descriptors"]["mean"]) == 15
    capsys.readouterr()
    assert main(["predict", "--model", str(out), str(SMALL[0]), str(SMALL[1]), "--format", "csv",
                 "--device", "cpu"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 2 and all(np.isfinite(float(r["value"])) for r in rows)
    assert main(["evaluate", "--model", str(out), "--data", str(trained / "cifs.zip"), "--labels",
                 str(trained / "labels.csv"), "--bootstrap", "50", "--cache", str(trained / "cache"),
                 "--device", "cpu"]) == 0
    assert "R²" in capsys.readouterr().out


def test_train_and_predict_a_hybrid_model(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--trees: the card records the trees and their weight; predict blends them with the network."""
    from models.artifacts import load_model

    out = trained / "hybrid"
    assert main(["train", "--data", str(trained / "cifs.zip"), "--labels", str(trained / "labels.csv"),
                 "--target", "ch4_uptake_mol_kg", "--out", str(out), "--epochs", "1", "--val-fraction", "0.25",
                 "--bootstrap", "50", "--trees", "--cache", str(trained / "cache"), "--device", "cpu"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert (out / "trees.npz").is_file() and card["training_data"]["trees"] is True
    from models.hybrid import TREE_FEATURES

    assert 0.0 <= card["trees"]["weight"] <= 1.0 and card["trees"]["features"] == list(TREE_FEATURES)
    assert load_model(out, device="cpu").needs_density  # the trees read the density: predict computes it
    capsys.readouterr()
    assert main(["predict", "--model", str(out), str(SMALL[0]), "--format", "csv", "--device", "cpu"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["value"]))
    # the blend of the CIF's own grid, density and crystal blocks (the trees' ch4_widom numbers), computed here
    from models.descriptors import compute_crystal_blocks
    from models.structure import load_crystal
    from models.units import crystal_density_g_cm3
    from models.voxels import compute_voxels

    loaded = load_model(out, device="cpu")
    crystal = load_crystal(SMALL[0])
    expected = loaded.predict(compute_voxels(crystal, loaded.voxel_params), densities_g_cm3=[
        crystal_density_g_cm3(crystal)], crystal_blocks=compute_crystal_blocks(loaded.crystal_blocks, [crystal]))
    assert float(rows[0]["value"]) == pytest.approx(float(expected[0, 0]), rel=1e-5)
    assert main(["evaluate", "--model", str(out), "--data", str(trained / "cifs.zip"), "--labels",
                 str(trained / "labels.csv"), "--bootstrap", "50", "--cache", str(trained / "cache"),
                 "--device", "cpu"]) == 0
    assert main(["train", "--data", str(trained / "cifs.zip"), "--labels", str(trained / "labels.csv"),
                 "--target", "ch4_uptake_mol_kg", "--target", "ch4_uptake_mol_kg", "--out", str(trained / "x"),
                 "--trees", "--device", "cpu"]) != 0


# --- serve / worker / simulate wiring ------------------------------------------------------------


def test_serve_and_worker_delegate(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    calls: list[tuple[object, ...]] = []
    server = types.ModuleType("app.server")
    server.serve = lambda host, port, data_dir: calls.append(("serve", host, port, data_dir))  # type: ignore[attr-defined]
    worker_main = types.ModuleType("worker.main")
    worker_main.run_worker = lambda queues, concurrency: calls.append(("worker", queues, concurrency))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "app.server", server)
    monkeypatch.setitem(sys.modules, "worker.main", worker_main)
    assert main(["serve", "--host", "0.0.0.0", "--port", "9000", "--data-dir", "/tmp/x"]) == 0
    assert main(["worker", "-Q", "voxels,inference", "-c", "3"]) == 0
    assert main(["worker", "-Q", "gpu"]) == 1
    assert calls == [("serve", "0.0.0.0", 9000, "/tmp/x"), ("worker", ["voxels", "inference"], 3)]


def test_simulate_is_registered() -> None:
    import app.cli_simulate  # noqa: F401  (our own module: a broken import is an error, never a skip)

    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert "simulate" in choices


def test_predict_csv_of_the_shipped_model_has_uncertainty_and_domain(capsys: pytest.CaptureFixture[str]) -> None:
    dense = Path(__file__).resolve().parents[1] / "data" / "dense" / "alpha_quartz.cif"
    assert main(["predict", str(SMALL[0]), str(dense), "--format", "csv", "--device", "cpu"]) == 0
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert float(rows["FIGXAU_clean"]["uncertainty"]) > 0
    assert rows["alpha_quartz"]["in_domain"] == "False"


def test_train_with_vibration_augmentation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cifs = sorted((Path(__file__).resolve().parents[1] / "data" / "cifs").glob("*_clean.cif"))[:4]
    labels = tmp_path / "labels.csv"
    labels.write_text("name,ch4_uptake_mol_kg\n" + "".join(f"{p.stem},{1 + i}\n" for i, p in enumerate(cifs)))
    data = tmp_path / "cifs"
    data.mkdir()
    for p in cifs:
        (data / p.name).write_bytes(p.read_bytes())
    code = main(["train", "--data", str(data), "--labels", str(labels), "--target", "ch4_uptake_mol_kg",
                 "--out", str(tmp_path / "m"), "--epochs", "1", "--batch-size", "2", "--val-fraction", "0.5",
                 "--vibration-copies", "2", "--name", "vib", "--version", "1", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert "2 jittered copies" in capsys.readouterr().err
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["training_data"]["vibration_copies"] == 2 and card["training_data"]["vibration_amplitude"] == 0.12
    # with the density read beside the grid too (each copy keeps its original's density)
    code = main(["train", "--data", str(data), "--labels", str(labels), "--target", "ch4_uptake_mol_kg",
                 "--out", str(tmp_path / "md"), "--epochs", "1", "--batch-size", "2", "--val-fraction", "0.5",
                 "--vibration-copies", "2", "--descriptors", "log_density", "--name", "vibd", "--version", "1",
                 "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    card = json.loads((tmp_path / "md" / "card.json").read_text())
    assert card["descriptors"]["names"] == ["log_density"] and card["training_data"]["vibration_copies"] == 2


def test_predict_with_the_isotherm_model_has_a_column_per_pressure(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["predict", str(SMALL[0]), "--model", "retnet-ch4-isotherm", "--format", "csv"])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1  # one row per structure (not per output) for a curve model
    row = rows[0]
    points = [float(row[f"uptake_{p}bar"]) for p in ("1", "5.8", "35", "65")]
    assert points == sorted(points) and points[0] >= 0
    assert float(row["value"]) == pytest.approx(points[1])  # the primary output: 5.8 bar
    assert float(row["deliverable_65_5.8bar"]) == pytest.approx(points[3] - points[1], rel=1e-4, abs=1e-5)


def test_design_ranks_the_shipped_library(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["design", "--model", "retnet-ch4-isotherm", "--target", "uptake_65bar=10", "--target",
                 "uptake_5.8bar=4", "--tolerance", "1", "--tolerance-for", "uptake_65bar=2", "--top", "7",
                 "--format", "csv"])
    out = capsys.readouterr()
    assert code == 0, out.err
    rows = list(csv.DictReader(io.StringIO(out.out)))
    assert [int(r["rank"]) for r in rows] == list(range(1, 8))
    distances = [float(r["distance"]) for r in rows]
    assert distances == sorted(distances)
    for r in rows:
        within = abs(float(r["uptake_65bar"]) - 10) <= 2 and abs(float(r["uptake_5.8bar"]) - 4) <= 1
        assert (r["within_tolerance"] == "True") == within and r["source"] == "library"
    assert "structures ranked with retnet-ch4-isotherm" in out.err


@pytest.mark.parametrize("argv,words", [
    (["--target", "uptake_65bar=10"], "does not give uptake_65bar"),  # the 5.8 bar model
    (["--target", "nonsense"], "expected QUANTITY=VALUE"),
    (["--model", "retnet-ch4-isotherm", "--target", "uptake_3bar=1"], "it gives value, uptake_1bar"),
])
def test_design_usage_errors_exit_2(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["design", *argv, "--tolerance", "1"]) == 2
    assert words in capsys.readouterr().err
