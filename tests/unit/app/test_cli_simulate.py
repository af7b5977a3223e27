"""``retnet simulate`` command-line behaviour: the CSV writer, resume and label reuse with the simulation replaced
by a fake (no RASPA2 needed), and one short real RASPA2 isotherm (``slow``)."""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest

from app.cli import main

CIFS = Path(__file__).resolve().parents[2] / "data" / "cifs"
A, B, C = (CIFS / f"{n}.cif" for n in ("KEGZOL04_clean", "SAYTUJ_clean", "EDUWAB_clean"))


class _Calls(list[str]):
    """Names simulated, in call order; ``.at``: (name, pressure in bar) of each call."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[tuple[str, float]] = []


@pytest.fixture()
def fake_raspa(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """RASPA2 'installed'; ``simulate_ch4`` returns a canned result per name (``bad*`` fail) and records calls."""
    import models.gcmc as gcmc

    calls = _Calls()

    def simulate(path: Any, *, name: str, pressure_pa: float = gcmc.PRESSURE_PA, **_: Any) -> Any:
        calls.append(name)
        calls.at.append((name, pressure_pa / 1e5))
        if name.startswith("bad"):
            return gcmc.GcmcResult(name=name, status="failed", message="RASPA2 crashed", pressure_pa=pressure_pa)
        # 1.5 mol/kg at 5.8 bar (the reference pressure); a Langmuir curve, q p / (b + p), elsewhere
        uptake = 1.5 * (pressure_pa / 1e5) / (pressure_pa / 1e5 + 10.0) * (5.8 + 10.0) / 5.8
        return gcmc.GcmcResult(name=name, status="ok", uptake_mol_kg=uptake, uptake_err=0.1, molecules_per_uc=2.0,
                               seconds=1.0, supercell_atoms=100, unit_cells=(2, 2, 2), pressure_pa=pressure_pa)

    monkeypatch.setattr(gcmc, "raspa_paths", lambda: (Path("/lib"), Path("/raspa")))
    monkeypatch.setattr(gcmc, "simulate_ch4", simulate)
    return calls


@pytest.fixture()
def fake_coremof(monkeypatch: pytest.MonkeyPatch) -> None:
    """A two-entry CoRE MOF (never extracts the real archive)."""
    import models.datasets as datasets

    known = {"KEGZOL04_clean": A, "SAYTUJ_clean": B}

    def coremof_cif(name: str, *_: Any, **__: Any) -> Path:
        if name not in known:
            raise KeyError(f"{name!r} is not in CoRE MOF 2019-ASR")
        return known[name]

    monkeypatch.setattr(datasets, "coremof_cif", coremof_cif)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _header() -> str:
    from models.gcmc import LABEL_COLUMNS

    return ",".join(LABEL_COLUMNS) + "\n"


# --- argument errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [["--jobs", "0"], ["--cycles", "0"], ["--init-cycles", "-1"]])
def test_bad_numbers_are_usage_errors(extra: list[str], tmp_path: Path, fake_raspa: list[str],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", str(A), "--out", str(tmp_path / "l.csv"), *extra]) == 2
    assert "--jobs >= 1" in capsys.readouterr().err
    assert fake_raspa == [] and not (tmp_path / "l.csv").exists()


def test_out_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["simulate", str(A)])
    assert info.value.code == 2 and "--out" in capsys.readouterr().err


def test_nothing_to_simulate(tmp_path: Path, fake_raspa: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--out", str(tmp_path / "l.csv")]) == 2
    assert "nothing to simulate" in capsys.readouterr().err


def test_missing_cif_file(tmp_path: Path, fake_raspa: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", str(tmp_path / "nope.cif"), "--out", str(tmp_path / "l.csv")]) == 2
    assert "no such CIF file" in capsys.readouterr().err and fake_raspa == []


def test_without_raspa_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import models.gcmc as gcmc

    def missing() -> Any:
        raise gcmc.RaspaNotAvailableError("RASPA2 is not installed: pip install '.[gcmc]' (builds from source)")

    monkeypatch.setattr(gcmc, "raspa_paths", missing)
    assert main(["simulate", str(A), "--out", str(tmp_path / "l.csv")]) == 2
    assert "pip install '.[gcmc]'" in capsys.readouterr().err


def test_existing_out_needs_resume(tmp_path: Path, fake_raspa: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "l.csv"
    out.write_text(_header())
    assert main(["simulate", str(A), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err and fake_raspa == []
    assert out.read_text() == _header()  # untouched


def test_resume_refuses_a_csv_with_other_columns(tmp_path: Path, fake_raspa: list[str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "l.csv"
    out.write_text("name,value\nKEGZOL04_clean,1\n")
    assert main(["simulate", str(A), "--out", str(out), "--resume"]) == 2
    assert "expected" in capsys.readouterr().err and fake_raspa == []


# --- runs --------------------------------------------------------------------------------------


def test_writes_one_row_per_structure(tmp_path: Path, fake_raspa: list[str]) -> None:
    out = tmp_path / "sub" / "l.csv"
    assert main(["simulate", str(A), str(B), str(A), "--out", str(out), "--jobs", "2"]) == 0
    assert sorted(fake_raspa) == ["KEGZOL04_clean", "SAYTUJ_clean"]  # duplicates run once
    rows = _rows(out)
    assert sorted(r["name"] for r in rows) == ["KEGZOL04_clean", "SAYTUJ_clean"]
    assert {r["status"] for r in rows} == {"ok"} and rows[0]["ch4_uptake_mol_kg"] == "1.5000000000"


def test_rows_reach_a_labels_file_replaced_during_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          fake_raspa: list[str]) -> None:
    """A ``git stash``/``checkout`` of the committed labels file mid-run swaps its inode: rows written after that
    land in the file at the path, not in the unlinked old one (a session once lost 56 labels that way)."""
    import shutil

    import models.gcmc as gcmc

    out = tmp_path / "l.csv"
    simulate = gcmc.simulate_ch4
    started: list[str] = []

    def simulate_then_swap(*args: Any, **kwargs: Any) -> Any:
        # simulations run in a worker thread while the main thread writes the rows: wait for the rows of the
        # ones before, then do what git does (write the file anew and rename it over the old path)
        deadline = time.monotonic() + 10
        while len(_rows(out)) < len(started) and time.monotonic() < deadline:
            time.sleep(0.01)
        started.append(kwargs["name"])
        shutil.copy(out, tmp_path / "swap.csv")
        os.replace(tmp_path / "swap.csv", out)
        return simulate(*args, **kwargs)

    monkeypatch.setattr(gcmc, "simulate_ch4", simulate_then_swap)
    assert main(["simulate", str(A), str(B), str(C), "--out", str(out), "--jobs", "1"]) == 0
    assert sorted(r["name"] for r in _rows(out)) == ["EDUWAB_clean", "KEGZOL04_clean", "SAYTUJ_clean"]
    assert out.read_text().count("name,") == 1  # one header


def test_resume_skips_names_already_in_the_csv(tmp_path: Path, fake_raspa: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "l.csv"
    out.write_text(_header() + "KEGZOL04_clean,2.0,0.1,1.0,3.00,40,ok\n")
    assert main(["simulate", str(A), str(B), "--out", str(out), "--resume"]) == 0
    assert fake_raspa == ["SAYTUJ_clean"]
    assert "1 to run, 1 already in" in capsys.readouterr().err
    rows = _rows(out)
    assert [r["name"] for r in rows] == ["KEGZOL04_clean", "SAYTUJ_clean"]
    assert rows[0]["ch4_uptake_mol_kg"] == "2.0"  # the old row is kept as it was
    assert out.read_text().count("name,") == 1  # no second header
    fake_raspa.clear()
    assert main(["simulate", str(A), str(B), "--out", str(out), "--resume"]) == 0  # all done: nothing runs
    assert fake_raspa == [] and len(_rows(out)) == 2


def test_resume_drops_a_torn_last_line(tmp_path: Path, fake_raspa: list[str]) -> None:
    out = tmp_path / "l.csv"
    out.write_text(_header() + "KEGZOL04_clean,2.0,0.1,1.0,3.00,40,ok\nSAYTUJ_clean,1.23")  # killed mid-write
    assert main(["simulate", str(A), str(B), "--out", str(out), "--resume"]) == 0
    assert fake_raspa == ["SAYTUJ_clean"]  # the torn row does not count as done
    rows = _rows(out)
    assert [r["name"] for r in rows] == ["KEGZOL04_clean", "SAYTUJ_clean"]
    assert rows[1]["status"] == "ok" and "1.23" not in out.read_text()


def test_a_failed_simulation_gives_exit_code_1(tmp_path: Path, fake_raspa: list[str]) -> None:
    bad = tmp_path / "bad_one.cif"
    bad.write_bytes(A.read_bytes())
    out = tmp_path / "l.csv"
    assert main(["simulate", str(bad), str(B), "--out", str(out)]) == 1
    by_name = {r["name"]: r for r in _rows(out)}
    assert by_name["bad_one"]["status"] == "failed" and by_name["SAYTUJ_clean"]["status"] == "ok"


# --- CoRE MOF names ----------------------------------------------------------------------------


def test_coremof_names_and_list_file(tmp_path: Path, fake_raspa: list[str], fake_coremof: None) -> None:
    names = tmp_path / "names.txt"
    names.write_text("# wanted\nSAYTUJ_clean  # small\n\nKEGZOL04_clean.cif\n")
    out = tmp_path / "l.csv"
    assert main(["simulate", "--coremof", "KEGZOL04_clean", "--coremof-list", str(names), "--out", str(out)]) == 0
    assert sorted(fake_raspa) == ["KEGZOL04_clean", "SAYTUJ_clean"]
    table = tmp_path / "names.csv"
    table.write_text("name,ch4_uptake_mol_kg\nSAYTUJ_clean,1\n")
    fake_raspa.clear()
    assert main(["simulate", "--coremof-list", str(table), "--out", str(tmp_path / "m.csv")]) == 0
    assert fake_raspa == ["SAYTUJ_clean"]


def test_unknown_coremof_names_are_listed(tmp_path: Path, fake_raspa: list[str], fake_coremof: None,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "l.csv"
    assert main(["simulate", "--coremof", "KEGZOL04_clean", "NOPE1", "NOPE2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not in CoRE MOF 2019-ASR: NOPE1, NOPE2" in err
    assert fake_raspa == [] and not out.exists()  # nothing runs when a name is wrong
    many = [f"X{i}" for i in range(13)]
    assert main(["simulate", "--coremof", *many, "--out", str(out)]) == 2
    assert "X9 and 3 more" in capsys.readouterr().err


# --- isotherms: --pressures ----------------------------------------------------------------------


def _iso_header() -> str:
    from models.gcmc import ISOTHERM_COLUMNS

    return ",".join(ISOTHERM_COLUMNS) + "\n"


def test_pressures_write_one_row_per_structure_and_pressure(tmp_path: Path, fake_raspa: _Calls,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "iso.csv"
    assert main(["simulate", str(A), str(B), "--pressures", "65,1,5.8,35", "--out", str(out)]) == 0
    assert out.read_text().splitlines()[0] + "\n" == _iso_header()
    rows = _rows(out)
    # structure-major, pressures increasing (with one job a partial run holds whole isotherms)
    assert [(r["name"], r["pressure_bar"]) for r in rows] == [
        (n, p) for n in ("KEGZOL04_clean", "SAYTUJ_clean") for p in ("1", "5.8", "35", "65")
    ]
    assert fake_raspa.at == [(n, p) for n in ("KEGZOL04_clean", "SAYTUJ_clean") for p in (1.0, 5.8, 35.0, 65.0)]
    assert {r["status"] for r in rows} == {"ok"} and {r["supercell_atoms"] for r in rows} == {"100"}
    uptakes = [float(r["ch4_uptake_mol_kg"]) for r in rows[:4]]
    assert uptakes == sorted(uptakes) and uptakes[1] == pytest.approx(1.5)  # each row holds its own pressure's value
    err = capsys.readouterr().err
    assert "8 to run at 1, 5.8, 35, 65 bar" in err and "SAYTUJ_clean @ 35 bar ok" in err


def test_pressures_are_sent_to_raspa_in_pa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real simulate_ch4 up to the RASPA2 call: the script it would run holds each pressure in Pa."""
    import models.gcmc as gcmc

    scripts: list[str] = []

    def run_raspa(script: str, cif: Any, *, timeout_s: float | None = None) -> str:
        scripts.append(script)
        return "Average loading absolute [mol/kg framework] 1.0 +/- 0.1 [-]\n" \
               "Average loading absolute [molecules/unit cell] 2.0 +/- 0.2 [-]\n"

    monkeypatch.setattr(gcmc, "raspa_paths", lambda: (Path("/lib"), Path("/raspa")))
    monkeypatch.setattr(gcmc, "run_raspa", run_raspa)
    out = tmp_path / "iso.csv"
    assert main(["simulate", str(B), "--pressures", "1,5.8,65", "--out", str(out)]) == 0
    pressures = sorted(line.split()[1] for s in scripts for line in s.splitlines() if line.startswith("ExternalPres"))
    assert pressures == sorted(["100000.0", "580000.0", "6500000.0"])
    assert all("NumberOfCycles 700" in s and "ExternalTemperature 298.0" in s for s in scripts)  # the protocol
    assert [r["pressure_bar"] for r in _rows(out)] == ["1", "5.8", "65"]
    assert {r["supercell_atoms"] for r in _rows(out)} == {"600"}  # SAYTUJ_clean: 4x3x2 cells of 25 atoms


@pytest.mark.parametrize("value", ["0", "1,-5", "a,b", "1,1", ",", "nan"])
def test_bad_pressure_lists_are_usage_errors(value: str, tmp_path: Path, fake_raspa: _Calls,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["simulate", str(A), "--pressures", value, "--out", str(tmp_path / "l.csv")])
    assert info.value.code == 2 and "--pressures" in capsys.readouterr().err
    assert fake_raspa == []


def test_isotherm_resume_skips_name_pressure_pairs(tmp_path: Path, fake_raspa: _Calls,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "iso.csv"
    # KEGZOL04 done at 1 and 5.8 bar (written "5.80" by hand: the same pressure), SAYTUJ at 65 bar failed;
    # the last line was torn by a kill
    out.write_text(_iso_header() + "KEGZOL04_clean,1,0.3,0.01,2.00,40,ok\nKEGZOL04_clean,5.80,1.9,0.1,3.00,40,ok\n"
                   "SAYTUJ_clean,65,,,1.00,600,failed\nSAYTUJ_clean,1,0.1")
    assert main(["simulate", str(A), str(B), "--pressures", "1,5.8,35,65", "--out", str(out), "--resume"]) == 0
    assert fake_raspa.at == [("KEGZOL04_clean", 35.0), ("KEGZOL04_clean", 65.0),
                             ("SAYTUJ_clean", 1.0), ("SAYTUJ_clean", 5.8), ("SAYTUJ_clean", 35.0)]
    assert "5 to run at 1, 5.8, 35, 65 bar, 3 already in" in capsys.readouterr().err
    rows = _rows(out)
    assert len(rows) == 8 and out.read_text().count("name,") == 1
    assert rows[1] == {"name": "KEGZOL04_clean", "pressure_bar": "5.80", "ch4_uptake_mol_kg": "1.9",
                       "ch4_uptake_err": "0.1", "seconds": "3.00", "supercell_atoms": "40", "status": "ok"}
    torn = [r for r in rows if (r["name"], r["pressure_bar"]) == ("SAYTUJ_clean", "1")]
    assert len(torn) == 1 and torn[0]["status"] == "ok" and torn[0]["ch4_uptake_mol_kg"] != "0.1"  # re-simulated
    fake_raspa.clear()
    fake_raspa.at.clear()
    assert main(["simulate", str(A), str(B), "--pressures", "1,5.8,35,65", "--out", str(out), "--resume"]) == 0
    assert fake_raspa.at == [] and len(_rows(out)) == 8
    # a new pressure later: only that point runs, for both structures
    assert main(["simulate", str(A), str(B), "--pressures", "1,10", "--out", str(out), "--resume"]) == 0
    assert fake_raspa.at == [("KEGZOL04_clean", 10.0), ("SAYTUJ_clean", 10.0)]


def test_isotherm_and_reference_files_do_not_mix(tmp_path: Path, fake_raspa: _Calls,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    reference = tmp_path / "l.csv"
    reference.write_text(_header() + "KEGZOL04_clean,2.0,0.1,1.0,3.00,40,ok\n")
    assert main(["simulate", str(A), "--pressures", "1,5.8", "--out", str(reference), "--resume"]) == 2
    assert "expected ['name', 'pressure_bar'" in capsys.readouterr().err
    iso = tmp_path / "iso.csv"
    iso.write_text(_iso_header())
    assert main(["simulate", str(A), "--out", str(iso), "--resume"]) == 2
    assert fake_raspa == []


def test_isotherm_rows_of_skipped_and_failed_structures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real simulate_ch4 without RASPA2 runs: a supercell above the limit is skipped at every pressure."""
    import models.gcmc as gcmc

    monkeypatch.setattr(gcmc, "raspa_paths", lambda: (Path("/lib"), Path("/raspa")))
    bad = tmp_path / "broken.cif"
    bad.write_text("data_x\n_cell_length_a 10\n")
    out = tmp_path / "iso.csv"
    code = main(["simulate", str(B), str(bad), "--pressures", "1,65", "--max-supercell-atoms", "599",
                 "--out", str(out)])
    assert code == 1  # the broken CIF failed
    rows = {(r["name"], r["pressure_bar"]): r for r in _rows(out)}
    assert set(rows) == {("SAYTUJ_clean", "1"), ("SAYTUJ_clean", "65"), ("broken", "1"), ("broken", "65")}
    assert rows["SAYTUJ_clean", "65"]["status"] == "skipped_large"
    assert rows["SAYTUJ_clean", "65"]["supercell_atoms"] == "600" and rows["SAYTUJ_clean", "65"]["seconds"] == "0.00"
    assert rows["broken", "1"]["status"] == "failed" and rows["broken", "1"]["ch4_uptake_mol_kg"] == ""


# --- isotherms: --reuse-labels -------------------------------------------------------------------


def _labels(path: Path, body: str) -> Path:
    path.write_text(_header() + body)
    return path


def test_reuse_copies_the_5_8_bar_point(tmp_path: Path, fake_raspa: _Calls,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    first = _labels(tmp_path / "ref.csv", "KEGZOL04_clean,1.8520000000,0.0400000000,3.1,12.50,1440,ok\n"
                                          "SAYTUJ_clean,,,,0.00,600,skipped_large\n")
    second = _labels(tmp_path / "extra.csv", "KEGZOL04_clean,9.0,9.0,9.0,9.00,1440,ok\n"  # later files lose
                                             "SAYTUJ_clean,0.6112,0.0544,0.5,4.00,600,ok\n")
    out = tmp_path / "iso.csv"
    args = ["simulate", str(A), str(B), "--pressures", "1,5.8,35,65", "--out", str(out),
            "--reuse-labels", str(first), str(second)]
    assert main(args) == 0
    assert ("KEGZOL04_clean", 5.8) not in fake_raspa.at and ("SAYTUJ_clean", 5.8) not in fake_raspa.at
    assert len(fake_raspa.at) == 6  # 1, 35 and 65 bar for both
    rows = {(r["name"], r["pressure_bar"]): r for r in _rows(out)}
    assert len(rows) == 8
    assert rows["KEGZOL04_clean", "5.8"] == {"name": "KEGZOL04_clean", "pressure_bar": "5.8",
                                             "ch4_uptake_mol_kg": "1.8520000000", "ch4_uptake_err": "0.0400000000",
                                             "seconds": "12.50", "supercell_atoms": "1440", "status": "ok_reused"}
    # the first *ok* row wins: SAYTUJ's skipped_large row in the first file is not a label
    assert rows["SAYTUJ_clean", "5.8"]["ch4_uptake_mol_kg"] == "0.6112000000"
    assert rows["SAYTUJ_clean", "5.8"]["status"] == "ok_reused" and rows["SAYTUJ_clean", "1"]["status"] == "ok"
    assert "6 to run at 1, 5.8, 35, 65 bar, 2 copied from 5.8 bar labels (ok_reused), 0 already in" in \
        capsys.readouterr().err
    fake_raspa.at.clear()
    assert main([*args, "--resume"]) == 0  # nothing left: the reused rows count as done
    assert fake_raspa.at == [] and len(_rows(out)) == 8


def test_reuse_only_fills_5_8_bar_and_respects_the_atom_limit(tmp_path: Path, fake_raspa: _Calls) -> None:
    labels = _labels(tmp_path / "ref.csv", "KEGZOL04_clean,1.85,0.04,3.1,12.50,1440,ok\n")
    out = tmp_path / "iso.csv"
    assert main(["simulate", str(A), "--pressures", "1,65", "--out", str(out), "--reuse-labels", str(labels)]) == 0
    assert fake_raspa.at == [("KEGZOL04_clean", 1.0), ("KEGZOL04_clean", 65.0)]
    assert {r["status"] for r in _rows(out)} == {"ok"}
    fake_raspa.at.clear()
    out2 = tmp_path / "iso2.csv"
    assert main(["simulate", str(A), "--pressures", "5.8", "--out", str(out2), "--reuse-labels", str(labels),
                 "--max-supercell-atoms", "1000"]) == 0
    assert fake_raspa.at == [("KEGZOL04_clean", 5.8)]  # a 1440-atom label is above this run's limit


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cycles", "100"], "reference 700 + 300 cycles"),
        (["--init-cycles", "10"], "reference 700 + 300 cycles"),
    ],
)
def test_reuse_needs_the_reference_cycles(extra: list[str], message: str, tmp_path: Path, fake_raspa: _Calls,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    labels = _labels(tmp_path / "ref.csv", "KEGZOL04_clean,1.85,0.04,3.1,12.50,1440,ok\n")
    out = tmp_path / "iso.csv"
    assert main(["simulate", str(A), "--pressures", "1,5.8", "--out", str(out), "--reuse-labels", str(labels),
                 *extra]) == 2
    assert message in capsys.readouterr().err and not out.exists() and fake_raspa == []


def test_reuse_usage_errors(tmp_path: Path, fake_raspa: _Calls, capsys: pytest.CaptureFixture[str]) -> None:
    labels = _labels(tmp_path / "ref.csv", "KEGZOL04_clean,1.85,0.04,3.1,12.50,1440,ok\n")
    out = tmp_path / "l.csv"
    assert main(["simulate", str(A), "--out", str(out), "--reuse-labels", str(labels)]) == 2
    assert "--reuse-labels needs --pressures" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    other.write_text("name,value\nKEGZOL04_clean,1\n")
    assert main(["simulate", str(A), "--pressures", "5.8", "--out", str(out), "--reuse-labels", str(other)]) == 2
    assert "not a 5.8 bar labels CSV" in capsys.readouterr().err
    assert main(["simulate", str(A), "--pressures", "5.8", "--out", str(out),
                 "--reuse-labels", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert fake_raspa == [] and not out.exists()


# --- one real RASPA2 isotherm --------------------------------------------------------------------


def _require_raspa() -> None:
    """Skip without RASPA2, unless RETNET_TEST_REQUIRE_SERVICES=1 (then a missing RASPA2 fails the test)."""
    from models.gcmc import raspa_available

    if raspa_available():
        return
    message = "RASPA2 is not installed (optional dependency: pip install '.[gcmc]')"
    if os.environ.get("RETNET_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message}; required because RETNET_TEST_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


@pytest.mark.slow
def test_real_short_isotherm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """SAYTUJ_clean (600-atom box) at 1 and 65 bar with 10 + 5 cycles through the real command and RASPA2."""
    _require_raspa()
    out = tmp_path / "iso.csv"
    assert main(["simulate", str(B), "--pressures", "1,65", "--cycles", "10", "--init-cycles", "5",
                 "--timeout", "120", "--out", str(out)]) == 0, capsys.readouterr().err
    rows = _rows(out)
    assert [(r["name"], r["pressure_bar"], r["status"]) for r in rows] == [
        ("SAYTUJ_clean", "1", "ok"), ("SAYTUJ_clean", "65", "ok")]
    low, high = (float(r["ch4_uptake_mol_kg"]) for r in rows)
    assert all(math.isfinite(v) for v in (low, high)) and 0 < low < high
    # full-protocol values are 0.11 mol/kg at 1 bar and 3.98 at 65 bar; 10 cycles are noisy, not that noisy
    assert high > 5 * low
    assert {r["supercell_atoms"] for r in rows} == {"600"} and all(float(r["seconds"]) > 0 for r in rows)


def test_missing_raspa_skips_locally_and_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    import models.gcmc as gcmc

    monkeypatch.setattr(gcmc, "raspa_available", lambda: False)
    monkeypatch.delenv("RETNET_TEST_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        _require_raspa()
    monkeypatch.setenv("RETNET_TEST_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="required because"):
        _require_raspa()
