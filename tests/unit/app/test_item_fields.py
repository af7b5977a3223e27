"""Per-item fields written back by a stage (app.services.progress.set_item_fields)."""

from __future__ import annotations


def test_alike_and_single_rows_update_only_held_active_items_and_none_keeps_a_column(settings) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from app.db.session import session_scope
    from app.db.tables import Job, JobItem, JobKind, JobStatus, Structure
    from app.services.progress import set_item_fields

    with session_scope(settings.db_url) as session:
        for sha in ("old", "new"):
            session.add(Structure(sha256=sha, name=sha, formula="C", n_atoms=1, raw_key=f"uploads/{sha}"))
        job = Job(kind=JobKind.screening, status=JobStatus.running, model_ref="m:1", progress_total=6)
        session.add(job)
        session.flush()
        for i in range(6):
            session.add(JobItem(id=f"i{i}", job_id=job.id, position=i, name=f"s{i}.cif", raw_key=f"uploads/{i}",
                                structure_sha256="old", parse_ms=7.0, lease_owner="other" if i == 4 else "me",
                                status=JobStatus.cancelled if i == 3 else JobStatus.running))
    hit = {"structure_sha256": None, "parse_ms": None, "voxelize_ms": 0.0, "cache_hit": True}
    rows = [{"id": f"i{i}", **hit} for i in (0, 1, 3, 4)]  # alike: one UPDATE ... IN
    rows += [{"id": "i2", "structure_sha256": "new", "parse_ms": 1.5, "voxelize_ms": 9.0, "cache_hit": False},
             {"id": "i5", "structure_sha256": None, "parse_ms": 2.5, "voxelize_ms": None, "cache_hit": None}]
    with session_scope(settings.db_url) as session:
        set_item_fields(session, rows, owner="me")
    with session_scope(settings.db_url) as session:
        got = {r.id: (r.structure_sha256, r.parse_ms, r.voxelize_ms, r.cache_hit)
               for r in session.scalars(select(JobItem))}
    assert got["i0"] == got["i1"] == ("old", 7.0, 0.0, True)  # None kept the hash and the parse time
    assert got["i2"] == ("new", 1.5, 9.0, False)
    assert got["i5"] == ("old", 2.5, None, None)
    assert got["i3"] == ("old", 7.0, None, None)  # cancelled meanwhile: untouched
    assert got["i4"] == ("old", 7.0, None, None)  # held by another task: untouched
