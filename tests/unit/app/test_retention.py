"""Retention (``retnet purge``, ``RETNET_RETENTION_DAYS``): old finished jobs go with their uploads and grids;
young jobs, what they use, active jobs and registered models stay; a dry run deletes nothing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

DAY = timedelta(days=1)


@dataclass
class World:
    """What :func:`world` put into the database and the store."""

    store: Any
    old_job: str
    young_job: str
    active_job: str
    training_job: str
    model_id: str
    keys: dict[str, str]


def _age(store: Any, key: str, days: float) -> None:
    """Set the object's mtime ``days`` in the past."""
    path = Path(store.root) / key
    stamp = (datetime.now() - timedelta(days=days)).timestamp()
    os.utime(path, (stamp, stamp))


def _put(store: Any, key: str, days: float) -> str:
    store.put(key, b"x")
    _age(store, key, days)
    return key


@pytest.fixture()
def world(settings) -> World:  # type: ignore[no-untyped-def]
    """Old, young, active and training jobs, their uploads and grids, a model trained by the old training job."""
    from app.db.session import session_scope
    from app.db.tables import Job, JobItem, ModelVersion, Prediction, Structure, utcnow
    from app.storage import cached_store, crystal_block_key, voxel_key

    store = cached_store(settings.store_uri)
    now = utcnow()
    old, young = now - 40 * DAY, now - 1 * DAY
    sha_old, sha_young, sha_shared = "a" * 64, "b" * 64, "c" * 64
    keys = {
        "upload_old": _put(store, "uploads/aa/old.cif", 40), "upload_young": _put(store, "uploads/bb/young.cif", 40),
        "upload_orphan_old": _put(store, "uploads/cc/orphan.cif", 40),
        "upload_orphan_new": _put(store, "uploads/dd/new.cif", 1),
        "zip_old": _put(store, "uploads/ee/train.zip", 40), "labels_old": _put(store, "uploads/ee/labels.csv", 40),
        "grid_old": _put(store, voxel_key(sha_old, "p1"), 40),
        "grid_young": _put(store, voxel_key(sha_young, "p1"), 40),  # old file, used by a young job
        "grid_shared": _put(store, voxel_key(sha_shared, "p1"), 40),  # used by the old and the young job
        "grid_orphan_new": _put(store, voxel_key("d" * 64, "p1"), 2),
        "block_old": _put(store, crystal_block_key(sha_old, "ch4_widom"), 40),  # goes with its structure's grid
        "block_shared": _put(store, crystal_block_key(sha_shared, "ch4_widom"), 40),
        "model_weights": _put(store, "models/m/1/weights.pt", 400),
    }
    with session_scope(settings.db_url) as session:
        model = ModelVersion(name="m", version="1", ref="m:1", params_hash="p1", card={}, storage_prefix="models/m/1/",
                             created_at=old)
        session.add(model)
        session.add_all([Structure(sha256=sha, name=sha[:4], formula="C", n_atoms=1, raw_key=raw, created_at=old)
                         for sha, raw in ((sha_old, keys["upload_old"]), (sha_young, keys["upload_young"]),
                                          (sha_shared, keys["upload_young"]))])
        jobs = {
            "old": Job(kind="screening", status="succeeded", created_at=old, updated_at=old, finished_at=old),
            "young": Job(kind="screening", status="succeeded", created_at=old, updated_at=young, finished_at=young),
            "active": Job(kind="screening", status="running", created_at=old, updated_at=old),
            "training": Job(kind="training", status="succeeded", created_at=old, updated_at=old, finished_at=old,
                            input_key=keys["zip_old"], params={"labels_key": keys["labels_old"]}),
        }
        session.add_all(jobs.values())
        session.flush()
        model.training_job_id = jobs["training"].id
        items = [
            JobItem(job_id=jobs["old"].id, position=0, name="old.cif", raw_key=keys["upload_old"],
                    structure_sha256=sha_old, status="succeeded", created_at=old, updated_at=old),
            JobItem(job_id=jobs["old"].id, position=1, name="shared.cif", raw_key=keys["upload_old"],
                    structure_sha256=sha_shared, status="succeeded", created_at=old, updated_at=old),
            JobItem(job_id=jobs["young"].id, position=0, name="young.cif", raw_key=keys["upload_young"],
                    structure_sha256=sha_young, status="succeeded", created_at=young, updated_at=young),
            JobItem(job_id=jobs["young"].id, position=1, name="shared.cif", raw_key=keys["upload_young"],
                    structure_sha256=sha_shared, status="succeeded", created_at=young, updated_at=young),
            JobItem(job_id=jobs["active"].id, position=0, name="active.cif", raw_key=keys["upload_young"],
                    status="queued", created_at=old, updated_at=old),
        ]
        session.add_all(items)
        session.flush()
        session.add_all([Prediction(item_id=i.id, structure_sha256=i.structure_sha256, model_id=model.id,
                                    params_hash="p1", value=1.0, values=[1.0]) for i in items[:4]])
        return World(store, jobs["old"].id, jobs["young"].id, jobs["active"].id, jobs["training"].id, model.id,
                     keys)


def _rows(settings) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from app.db.session import session_scope
    from app.db.tables import Job, JobItem, ModelVersion, Prediction, Structure

    with session_scope(settings.db_url) as session:
        return {"jobs": set(session.scalars(select(Job.id))), "items": set(session.scalars(select(JobItem.id))),
                "predictions": set(session.scalars(select(Prediction.id))),
                "structures": set(session.scalars(select(Structure.sha256))),
                "models": {f"{m.ref}:{m.training_job_id}" for m in session.scalars(select(ModelVersion))}}


def _objects(store: Any) -> set[str]:
    return set(store.list(""))


def test_old_job_goes_with_its_uploads_and_grids(settings, world: World) -> None:  # type: ignore[no-untyped-def]
    from app.services.retention import purge

    report = purge(settings, world.store, older_than_days=30)
    rows, objects, k = _rows(settings), _objects(world.store), world.keys
    assert set(report.jobs) == {world.old_job, world.training_job}
    assert rows["jobs"] == {world.young_job, world.active_job}, "young and active jobs stay"
    assert report.items == 2 and report.predictions == 2 and len(rows["items"]) == 3
    assert rows["structures"] == {"b" * 64, "c" * 64} and report.structures == 1
    gone = {k["upload_old"], k["upload_orphan_old"], k["zip_old"], k["labels_old"], k["grid_old"], k["block_old"]}
    assert set(report.uploads) | set(report.grids) == gone
    assert not gone & objects
    assert {k["upload_young"], k["upload_orphan_new"], k["grid_young"], k["grid_shared"], k["grid_orphan_new"],
            k["block_shared"], k["model_weights"]} <= objects
    assert rows["models"] == {"m:1:None"}, "the model stays; only its link to the deleted training job goes"


def test_dry_run_deletes_nothing_and_reports_the_same(settings, world: World) -> None:  # type: ignore[no-untyped-def]
    from app.services.retention import purge

    rows, objects = _rows(settings), _objects(world.store)
    dry = purge(settings, world.store, older_than_days=30, dry_run=True)
    assert _rows(settings) == rows and _objects(world.store) == objects
    real = purge(settings, world.store, older_than_days=30)
    assert (set(dry.jobs), dry.items, dry.predictions, dry.structures, set(dry.uploads), set(dry.grids)) == (
        set(real.jobs), real.items, real.predictions, real.structures, set(real.uploads), set(real.grids))
    assert "would delete 2 job(s)" in dry.summary() and "deleted 2 job(s)" in real.summary()


def test_nothing_is_old_enough(settings, world: World) -> None:  # type: ignore[no-untyped-def]
    from app.services.retention import purge

    rows, objects = _rows(settings), _objects(world.store)
    report = purge(settings, world.store, older_than_days=365)
    assert not report.jobs and not report.uploads and not report.grids
    assert _rows(settings) == rows and _objects(world.store) == objects


def test_grid_key_names_its_structure() -> None:
    from app.services.retention import grid_structure
    from app.storage import voxel_key

    assert grid_structure(voxel_key("e" * 64, "abc123")) == "e" * 64
    assert grid_structure("voxels/odd-file.npy") is None


def test_sweeper_purges_at_most_hourly_when_configured(settings, world: World) -> None:  # type: ignore[no-untyped-def]
    from app.services.sweeper import PeriodicSweeper

    assert PeriodicSweeper(settings).maybe_purge(now=0.0) is None, "retention_days None: keep forever"
    sweeper = PeriodicSweeper(settings.model_copy(update={"retention_days": 30.0}))
    first = sweeper.maybe_purge(now=1000.0)
    assert first is not None and set(first.jobs) == {world.old_job, world.training_job}
    assert sweeper.maybe_purge(now=1000.0 + 3599) is None
    again = sweeper.maybe_purge(now=1000.0 + 3600)
    assert again is not None and again.jobs == []


def test_retention_days_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from app.core.config import Settings

    assert Settings().retention_days is None
    monkeypatch.setenv("RETNET_RETENTION_DAYS", "7.5")
    assert Settings().retention_days == 7.5
    monkeypatch.setenv("RETNET_RETENTION_DAYS", "0")
    with pytest.raises(ValidationError):
        Settings()


def test_purge_command(settings, world: World, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                       capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main
    from app.core.config import get_settings

    monkeypatch.setenv("RETNET_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("RETNET_DATABASE_URL", raising=False)
    monkeypatch.delenv("RETNET_STORAGE_URI", raising=False)
    get_settings.cache_clear()
    try:
        assert main(["purge", "--older-than", "30", "--dry-run"]) == 0
        out = capsys.readouterr()
        assert "would delete 2 job(s)" in out.err and world.keys["upload_old"] in out.out
        assert world.keys["upload_old"] in _objects(world.store)
        assert main(["purge", "--older-than", "30"]) == 0
        assert "deleted 2 job(s)" in capsys.readouterr().err
        assert world.keys["upload_old"] not in _objects(world.store)
        with pytest.raises(SystemExit):
            main(["purge", "--older-than", "-1"])
    finally:
        get_settings.cache_clear()


def test_local_store_lists_keys_with_mtimes(tmp_path: Path) -> None:
    from datetime import UTC

    from app.storage.local import LocalStore

    store = LocalStore(tmp_path)
    _put(store, "voxels/p/aa/x.npy.gz", 10)
    _put(store, "uploads/aa/y.cif", 0)
    (tmp_path / "voxels" / "p" / ".tmp-partial").write_bytes(b"")
    listed = store.list_with_times("voxels/")
    assert [k for k, _ in listed] == ["voxels/p/aa/x.npy.gz"]
    age = datetime.now(UTC) - listed[0][1]
    assert listed[0][1].tzinfo is not None and timedelta(days=9.9) < age < timedelta(days=10.1)
    assert store.list_with_times("models/") == []


def test_s3_store_lists_keys_with_last_modified(optional_module, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC

    moto = optional_module("moto", "moto (in-process S3)")
    from app.storage.s3 import S3Store

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "test")
    with moto.mock_aws():
        store = S3Store("retention-test", "pre/fix")
        store.ensure_bucket()
        store.put("voxels/p/aa/x.npy.gz", b"1")
        store.put("uploads/aa/y.cif", b"2")
        listed = store.list_with_times("voxels/")
    assert [k for k, _ in listed] == ["voxels/p/aa/x.npy.gz"]
    assert abs(datetime.now(UTC) - listed[0][1]) < timedelta(minutes=5)
