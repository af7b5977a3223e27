"""Property-based fuzzing of the whole HTTP API with schemathesis, against the embedded app in-process (ASGI).

Every operation of the app's OpenAPI document gets schema-valid (positive) and schema-invalid (negative)
requests from hypothesis (derandomized, a fixed seed, a bounded number of examples per operation and mode),
and every response goes through every built-in check of ``case.call_and_validate()``: no 5xx; status codes,
content types, headers and bodies as documented; invalid data rejected; valid data accepted. Each remaining
finding that is not a bug is listed in :data:`EXPECTED` with its reason (and in docs/service.md, "Fuzzing").

The schemathesis pytest plugin's lazy schemas (``schemathesis.pytest.from_fixture``) break under pytest 9
(``Function._nodeid``), so the operations are driven here with hypothesis directly; the figures of the run are
printed at the end (``schemathesis: N cases ...``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

#: Fixed seed; examples per operation and generation mode (the whole run: about a minute on 2 cores).
SEED = 20261202
MAX_EXAMPLES = 60

#: ``(check name, operation label, words of the failure)`` → why such a failure is not a bug.
EXPECTED: dict[tuple[str, str, str], str] = {
    ("Schema-violating request accepted", "POST /screenings", "/properties/files/items"):
        "a 'files' item mutated to a number or object still travels as a file part whose bytes are that text: "
        "multipart cannot carry the type change, and any bytes are a file (the item fails later: not a CIF)",
}


def expected(check: str, operation: str, text: str) -> str | None:
    """Why the finding ``check`` on ``operation`` (failure text ``text``) is not a bug, or None."""
    return next((why for (c, o, words), why in EXPECTED.items() if c == check and o == operation and words in text),
                None)

#: The uploads' contents are opaque bytes to the schema: a schema-valid request may still carry an empty file
#: (400), a file over the size limit (413), or bytes that are no CIF, zip or labels CSV (422). Those documented
#: refusals are accepted answers to positive data on the three upload operations (every other status is not).
#: Design targets and result sort keys name a model's outputs: a schema-valid quantity the job's model does not
#: give (uptake_3bar of a 5.8 bar model) is the documented 422 naming those it gives.
CONFIG = {"operations": [{
    "include-path-regex": "^/(predict|screenings|training-jobs)$",
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "413", "422"]}},
}, {
    "include-path-regex": "^/(design|jobs/\\{job_id\\}/results)$",
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "404", "422"]}},
}]}


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The embedded app in a temporary data dir: SQLite, local store, workers off (tasks run inline), one
    registered model row."""
    from app.core import queue
    from app.core.config import Settings
    from app.db.migrate import upgrade
    from app.db.session import session_scope
    from app.db.tables import ModelVersion
    from app.main import create_app
    from app.services.registry import params_hash_of
    from worker.pipeline import predict_chunk, voxelize_chunk
    from worker.runtime import WorkerContext

    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    s = Settings(data_dir=data_dir, embedded_workers=False, register_shipped_model=False, sweep_interval_s=0,
                 upload={"max_cif_bytes": 50_000, "max_zip_bytes": 200_000, "max_unzipped_bytes": 400_000})
    upgrade(s.db_url)
    card = {"name": "m", "version": "1", "voxel_params": {},
            "targets": [{"name": "ch4", "unit": "mol/kg", "property": "CH4 uptake"}]}
    with session_scope(s.db_url) as session:
        session.add(ModelVersion(name="m", version="1", ref="m:1", params_hash=params_hash_of(card), card=card,
                                 storage_prefix="models/m/1/"))
    ctx = WorkerContext(s)
    patch = pytest.MonkeyPatch()  # the tasks run in-process, synchronously: POST /predict answers at once
    patch.setattr(queue, "enqueue_voxelize", lambda ids, settings=None: voxelize_chunk(ctx, list(ids)))
    patch.setattr(queue, "enqueue_predict", lambda ids, settings=None, **_: predict_chunk(ctx, list(ids)))
    patch.setattr(queue, "enqueue_training", lambda job_id, settings=None: None)  # training waits in its queue
    patch.setattr(queue, "enqueue_design", lambda job_id, settings=None: None)  # so does design
    try:
        yield create_app(s)
    finally:
        patch.undo()


def _failures(exc: BaseException) -> list[BaseException]:
    """The individual check failures of what ``call_and_validate`` raised."""
    if isinstance(exc, BaseExceptionGroup):
        return [f for e in exc.exceptions for f in _failures(e)]
    return [exc]


def _check_name(failure: BaseException) -> str:
    return str(getattr(failure, "check_name", None) or getattr(failure, "title", None) or type(failure).__name__)


def seed_job(settings: Any) -> str:
    """A finished screening of 3 items (2 predicted by ``m:1``, 1 failed), written straight into the database."""
    from app.db.session import session_scope
    from app.db.tables import Job, JobItem, JobKind, ModelVersion, Prediction, Structure, new_id

    with session_scope(settings.db_url) as session:
        model_id = session.query(ModelVersion.id).filter_by(ref="m:1").scalar()
        job = Job(kind=JobKind.screening, status="succeeded", model_ref="m:1", progress_total=3, progress_done=2,
                  progress_failed=1)
        session.add(job)
        if session.get(Structure, "f" * 64) is None:
            session.add(Structure(sha256="f" * 64, name="s", formula="C", n_atoms=1, raw_key="uploads/ff/x.cif"))
        session.flush()
        for i in range(3):
            item = JobItem(id=new_id(), job_id=job.id, position=i, name=f"s{i}.cif", raw_key="uploads/ff/x.cif",
                           status="failed" if i == 2 else "succeeded", error="not a CIF" if i == 2 else None,
                           error_code="structure" if i == 2 else None, structure_sha256=None if i == 2 else "f" * 64)
            session.add(item)
            session.flush()
            if i < 2:
                session.add(Prediction(item_id=item.id, structure_sha256="f" * 64, model_id=model_id,
                                       params_hash="p", value=float(i), values=[float(i)]))
        return str(job.id)


def known_parameters(operation: Any, settings: Any) -> dict[str, str] | None:
    """Path parameters naming things that exist (a fresh job, the registered model), so the fuzzer reaches the
    code behind the 404s of random ids; None for an operation without such parameters."""
    if "{job_id}" in operation.path:
        return {"job_id": seed_job(settings)}
    if "{name}" in operation.path:
        return {"name": "m"}
    return None


def fuzz_operation(operation: Any, mode: GenerationMode, findings: dict[tuple[str, str], str],
                   tolerated: Counter[tuple[str, str]], path_parameters: dict[str, str] | None = None) -> int:
    """Run ``MAX_EXAMPLES`` cases of one operation in one mode (with ``path_parameters`` fixed, when given);
    record each new finding (count the expected ones in ``tolerated``); return the number of cases run."""
    ran = 0

    @seed(SEED)
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def run(case: Any) -> None:
        nonlocal ran
        ran += 1
        try:
            case.call_and_validate()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001  (every finding is collected, then reported)
            for failure in _failures(exc):
                key = (_check_name(failure), operation.label)
                text = str(failure).strip()[:1500]
                if expected(*key, text) is not None:
                    tolerated[key] += 1
                elif key not in findings:
                    findings[key] = f"[{mode.value}] {text}\n  reproduce: {case.as_curl_command()}"

    try:
        run()
    except Unsatisfiable:  # no schema-invalid request exists (an operation without parameters): nothing to run
        pass
    return ran


@pytest.mark.timeout(600)
def test_api_conforms_to_its_schema(fuzz_app: Any, request: pytest.FixtureRequest) -> None:
    started = time.perf_counter()
    config = schemathesis.Config.from_dict(CONFIG)
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app, config=config)
    cases: Counter[str] = Counter()
    findings: dict[tuple[str, str], str] = {}
    tolerated: Counter[tuple[str, str]] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for known in (False, True):
                fixed = known_parameters(operation, fuzz_app.state.settings) if known else None
                if known and fixed is None:
                    continue
                t0 = time.perf_counter()
                ran = fuzz_operation(operation, mode, findings, tolerated, fixed)
                cases[operation.label] += ran
                print(f"{operation.label} [{mode.value}{', known ids' if known else ''}]: {ran} cases, "
                      f"{time.perf_counter() - t0:.1f} s")
    elapsed = time.perf_counter() - started
    summary = (f"schemathesis {schemathesis.SCHEMATHESIS_VERSION}: {sum(cases.values())} cases over {len(cases)} "
               f"operations, seed {SEED}, {MAX_EXAMPLES} examples per operation and mode, {elapsed:.1f} s, "
               f"{len(findings)} unexpected finding(s); expected ones: {dict(tolerated) or 'none'}")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(summary)
    print(summary)
    assert not findings, "\n\n".join(f"{check} on {op}:\n{text}" for (check, op), text in findings.items())
