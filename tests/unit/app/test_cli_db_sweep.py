"""``retnet db upgrade|current``, ``retnet sweep`` and the --freeze check of ``retnet train``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from app.cli import main


@pytest.fixture()
def data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """RETNET_DATA_DIR in a temporary folder (embedded SQLite), settings cache cleared around the test."""
    from app.core.config import get_settings

    monkeypatch.setenv("RETNET_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("RETNET_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_db_upgrade_then_current(data_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app.db.migrate import check_migrated, head_revision

    assert main(["db", "current"]) == 0
    assert capsys.readouterr().out.strip() == "(no schema)"
    assert main(["db", "upgrade"]) == 0
    assert f"upgraded to {head_revision()}" in capsys.readouterr().err
    check_migrated(f"sqlite:///{(data_env / 'retnet.db').resolve()}")  # what the API checks at start-up
    assert main(["db", "current"]) == 0
    assert capsys.readouterr().out.strip() == head_revision()
    assert main(["db", "upgrade"]) == 0  # idempotent


def test_db_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["db"])
    assert info.value.code == 2


def test_the_refusal_message_names_a_command_that_exists() -> None:
    from app.db.migrate import UPGRADE_HINT

    assert UPGRADE_HINT.startswith("retnet db upgrade")
    with pytest.raises(SystemExit) as info:
        main(["db", "upgrade", "--help"])
    assert info.value.code == 0


def test_sweep_on_an_unmigrated_database_names_the_fix(data_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep"]) == 1
    assert "retnet db upgrade" in capsys.readouterr().err


def test_sweep_reenqueues_stuck_work(data_env: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from app.core import queue
    from app.core.config import get_settings
    from app.db.session import session_scope
    from app.db.tables import Job, JobKind, JobStatus, utcnow

    assert main(["db", "upgrade"]) == 0
    sent: list[str] = []
    monkeypatch.setattr(queue, "enqueue_training", lambda job_id, settings=None: sent.append(job_id))
    with session_scope(get_settings().db_url) as session:
        job = Job(kind=JobKind.training, status=JobStatus.queued, params={}, progress_total=1,
                  updated_at=utcnow() - timedelta(minutes=30))
        session.add(job)
        session.flush()
        job_id = job.id
    assert main(["sweep", "--older-than", "60"]) == 0  # not yet an hour
    assert sent == []
    assert main(["sweep", "--older-than", "20"]) == 0
    assert sent == [job_id]
    assert "1 training job(s)" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--freeze", "conv"], ["--input-clip", "5"]])
def test_train_base_model_options_need_a_base_model(option: list[str], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: --freeze conv without --base-model trained a net around frozen random convolutions; --input-clip
    replaces a base model's clip, so it needs one too."""
    labels = tmp_path / "labels.csv"
    labels.write_text("name,y\nA,1\n")
    assert main(["train", "--data", str(tmp_path), "--labels", str(labels), "--target", "y",
                 "--out", str(tmp_path / "m"), *option]) == 1
    assert "--base-model" in capsys.readouterr().err

