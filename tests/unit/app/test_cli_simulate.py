"""``retnet simulate`` command-line behaviour without RASPA2: the simulation itself is replaced by a fake."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from app.cli import main

CIFS = Path(__file__).resolve().parents[2] / "data" / "cifs"
A, B, C = (CIFS / f"{n}.cif" for n in ("KEGZOL04_clean", "SAYTUJ_clean", "EDUWAB_clean"))


@pytest.fixture()
def fake_raspa(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """RASPA2 'installed'; ``simulate_ch4`` returns a canned result per name (``bad*`` fail) and records calls."""
    import models.gcmc as gcmc

    calls: list[str] = []

    def simulate(path: Any, *, name: str, **_: Any) -> Any:
        calls.append(name)
        if name.startswith("bad"):
            return gcmc.GcmcResult(name=name, status="failed", message="RASPA2 crashed")
        return gcmc.GcmcResult(name=name, status="ok", uptake_mol_kg=1.5, uptake_err=0.1, molecules_per_uc=2.0,
                               seconds=1.0, supercell_atoms=100, unit_cells=(2, 2, 2))

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
