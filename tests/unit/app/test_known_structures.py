"""Which uploads of a screening skip the voxels stage (app.services.submit.known_structures)."""

from __future__ import annotations


def test_only_bytes_parsed_and_gridded_with_these_voxel_parameters_skip_the_voxels_stage(settings, model_row) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from app.db.session import get_sessionmaker, session_scope
    from app.db.tables import Job, JobItem, JobKind, JobStatus, ModelVersion, Prediction, Structure
    from app.services.submit import KNOWN_QUERY_CHUNK, known_structures

    n = KNOWN_QUERY_CHUNK + 7  # more than one IN (…) query
    with session_scope(settings.db_url) as session:
        model = session.scalars(select(ModelVersion).where(ModelVersion.ref == model_row)).one()
        model_id, params_hash = model.id, model.params_hash
        job = Job(kind=JobKind.screening, status=JobStatus.succeeded, model_ref=model_row, progress_total=n)
        session.add(job)
        session.flush()
        for i in range(n):
            density = None if i == 1 else 1.0  # stored before densities were kept: parsed again
            session.add(Structure(sha256=f"{i:064x}", name=f"s{i}", formula="C", n_atoms=1, density_g_cm3=density,
                                  raw_key=f"uploads/{i}.cif"))
            if i == 2:
                continue  # parsed, never predicted: no grid known for any voxel parameters
            item = JobItem(job_id=job.id, position=i, name=f"s{i}.cif", raw_key=f"uploads/{i}.cif",
                           status=JobStatus.succeeded)
            session.add(item)
            session.flush()
            session.add(Prediction(item_id=item.id, structure_sha256=f"{i:064x}", model_id=model_id,
                                   params_hash=params_hash if i != 3 else "other-voxel-parameters", value=1.0,
                                   values=[1.0]))
    keys = [f"uploads/{i}.cif" for i in range(n)] + ["uploads/never-seen.cif", "uploads/0.cif"]
    with get_sessionmaker(settings.db_url)() as session:  # the API's sessions: it opens its own transactions
        known = known_structures(session, keys, params_hash)
    assert set(known) == {f"uploads/{i}.cif" for i in range(n)} - {"uploads/1.cif", "uploads/2.cif", "uploads/3.cif"}
    assert known["uploads/0.cif"] == f"{0:064x}" and known[f"uploads/{n - 1}.cif"] == f"{n - 1:064x}"
