"""POST /training-jobs: a zip of CIFs + labels CSV → 202 with the job (progress via GET /jobs/{id})."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.api.deps import CallerDep, IdempotencyKeyDep, SessionDep, SettingsDep, StoreDep
from app.api.responses import accepted_response
from app.schemas import JobAccepted
from app.services import jobs as jobs_service
from app.services.errors import BadRequestError, UnprocessableError
from app.services.submit import TrainingRequest, Upload, submit_training
from app.services.uploads import file_upload, is_zip_name, read_limited, safe_filename, spooled_file
from models.descriptors import DESCRIPTOR_WIDTHS

router = APIRouter(tags=["training"])


@router.post(
    "/training-jobs", status_code=202, response_model=JobAccepted,
    responses={400: {"description": "not a zip, empty file or unsafe zip path"},
               413: {"description": "upload over the size limit"},
               422: {"description": "no CIFs, missing labels/targets or unknown base model"}},
)
async def create_training_job(
    settings: SettingsDep,
    session: SessionDep,
    store: StoreDep,
    idempotency_key: IdempotencyKeyDep,
    caller: CallerDep,
    file: Annotated[UploadFile, File(description=".zip with CIFs and a labels CSV (name,<target>...)")],
    labels: Annotated[UploadFile | None, File(description="labels CSV, when not inside the zip")] = None,
    targets: Annotated[str, Form(description="target column(s), comma-separated")] = "",
    target: Annotated[str | None, Form(description="alias of targets")] = None,
    epochs: Annotated[int, Form(ge=1, le=10000)] = 50,
    batch_size: Annotated[int, Form(ge=2, le=4096)] = 64,
    learning_rate: Annotated[float, Form(gt=0, le=10)] = 1e-3,
    augment: Annotated[bool, Form()] = True,
    translate: Annotated[bool, Form(description="also augment with random periodic translations")] = False,
    val_fraction: Annotated[float, Form(ge=0, lt=1, description="validation share of what the test split leaves "
                                                                 "(early stopping, σ calibration, domain)")] = 0.2,
    test_fraction: Annotated[float, Form(ge=0, lt=1, description="held-out test share, scored in the card "
                                                                  "(10,000 bootstrap resamples); 0: none")] = 0.2,
    vibration_copies: Annotated[int, Form(ge=0, le=16, description="vibration augmentation: jittered copies of "
                                                                    "each training structure (0: off)")] = 0,
    vibration_amplitude: Annotated[float | None, Form(ge=0, le=0.5, description="RMS thermal displacement per "
                                                                                 "axis (Å; default 0.12)")] = None,
    gas: Annotated[str | None, Form(max_length=50, description="adsorbate of the labels, e.g. CH4")] = None,
    temperature_k: Annotated[float | None, Form(gt=0, le=5000, description="temperature of the labels (K)")] = None,
    pressure_bar: Annotated[float | None, Form(gt=0, le=1e5, description="pressure of the labels (bar)")] = None,
    descriptors: Annotated[str, Form(max_length=100, description="exact crystal descriptors read beside the grid, "
                                     "comma-separated: log_density (from the CIF), energy_histogram (of the grid); "
                                     "empty: the grid only")] = "",
    seed: Annotated[int, Form(ge=0, le=2**32 - 1, description="random seed of the split and the training")] = 0,
    base_model: Annotated[str | None, Form(description="fine-tune this model (name or name:version)")] = None,
    freeze: Annotated[Literal["conv", "all-but-output"] | None, Form()] = None,
    input_clip: Annotated[float | None, Form(gt=0, le=1e6, description="fine-tuning: clip Boltzmann factors at this "
                                             "value instead of the base model's (e.g. 5 with a few hundred labels; "
                                             "needs base_model)")] = None,
    trees: Annotated[bool, Form(description="a hybrid model: average the network with Extra Trees on the grid's "
                                "energy histogram and the crystal density, fitted on the training split, the "
                                "weight chosen on the validation split (one target)")] = False,
    name: Annotated[str, Form(pattern=r"^[A-Za-z0-9_.-]{1,100}$", description="name of the new model")] = "retnet",
    version: Annotated[str | None, Form(pattern=r"^[A-Za-z0-9_.-]{1,60}$")] = None,
    unit: Annotated[str, Form(max_length=50)] = "mol/kg",
    property: Annotated[str | None, Form(max_length=200, description="property description")] = None,
) -> JSONResponse:
    """Train (or fine-tune) a RetNet on labelled structures and register the model."""
    if not is_zip_name(file.filename):
        raise BadRequestError(f"'{file.filename}' is not a .zip: send the CIFs and the labels CSV as one zip")
    # the zip stays in its spooled temporary file: hashed, checked and stored in chunks, never whole in memory
    archive = await run_in_threadpool(file_upload, spooled_file(file, settings.upload.max_zip_bytes, what="zip"),
                                      safe_filename(file.filename, default="train.zip"))
    label_upload = None
    if labels is not None and labels.filename:
        label_upload = Upload(safe_filename(labels.filename, default="labels.csv"),
                              await read_limited(labels, settings.upload.max_cif_bytes, what="labels CSV"))
    target_list = [t.strip() for t in (targets or target or "").split(",") if t.strip()]
    descriptor_list = tuple(dict.fromkeys(d.strip() for d in descriptors.split(",") if d.strip()))
    unknown = [d for d in descriptor_list if d not in DESCRIPTOR_WIDTHS]
    if unknown:
        raise UnprocessableError(f"unknown descriptor(s) {', '.join(unknown)}; known: "
                                 f"{', '.join(sorted(DESCRIPTOR_WIDTHS))}")
    request = TrainingRequest(
        targets=target_list, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, augment=augment,
        val_fraction=val_fraction, seed=seed, base_model=base_model, freeze=freeze, model_name=name,
        model_version=version, unit=unit, property=property, translate=translate, test_fraction=test_fraction,
        vibration_copies=vibration_copies, vibration_amplitude=vibration_amplitude, gas=gas,
        temperature_k=temperature_k, pressure_bar=pressure_bar, descriptors=descriptor_list, input_clip=input_clip,
        trees=trees,
    )
    job_id = await run_in_threadpool(submit_training, session, settings, store, archive, label_upload, request,
                                    idempotency_key, caller=caller)
    return accepted_response(await run_in_threadpool(jobs_service.accepted, session, job_id))
