"""Pictures: GET /structures/{sha}/grid.png (stored energy grids, access by job ownership) and a model's figures."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SHA = "ab" * 32
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels of a PNG."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


def _structure_in_job(settings: Any, sha: str = SHA, owner: str | None = None) -> None:
    """A structure row and a finished job item holding it (as the pipeline leaves them)."""
    from app.db.session import session_scope
    from app.db.tables import Job, JobItem, JobKind, JobStatus, Structure

    with session_scope(settings.db_url) as session:
        session.add(Structure(sha256=sha, name="X", formula="C2", n_atoms=2, raw_key="uploads/x.cif"))
        job = Job(kind=JobKind.predict, status=JobStatus.succeeded, params={}, owner=owner, progress_total=1)
        session.add(job)
        session.flush()
        session.add(JobItem(job_id=job.id, position=0, name="X.cif", raw_key="uploads/x.cif", structure_sha256=sha,
                            status=JobStatus.succeeded))


def _store_grid(settings: Any, grid: np.ndarray, sha: str = SHA) -> None:
    from app.db.session import session_scope
    from app.db.tables import ModelVersion
    from app.storage import encode_grid, store_from_uri, voxel_key

    with session_scope(settings.db_url) as session:
        params_hash = session.query(ModelVersion).filter_by(ref="m:1").one().params_hash
    store_from_uri(settings.store_uri).put(voxel_key(sha, params_hash), encode_grid(grid))


def _grid(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.exp(-rng.normal(0.0, 2.0, size=(25, 25, 25))).astype(np.float32)


def test_grid_png_draws_the_stored_grid(client, settings, model_row: str) -> None:  # type: ignore[no-untyped-def]
    _structure_in_job(settings)
    _store_grid(settings, _grid(0))
    r = client.get(f"/structures/{SHA}/grid.png", params={"model": model_row})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.content.startswith(PNG_MAGIC)
    width, height = _png_size(r.content)
    assert width > 2 * height  # three slices side by side
    default = client.get(f"/structures/{SHA}/grid.png")  # no model: the default (the only one here)
    assert default.status_code == 200 and default.content == r.content
    _store_grid(settings, _grid(1))  # another grid under the same key: another picture
    assert client.get(f"/structures/{SHA}/grid.png", params={"model": model_row}).content != r.content


def test_grid_png_is_404_json_when_the_grid_is_not_stored(client, settings, model_row: str) -> None:  # type: ignore[no-untyped-def]
    _structure_in_job(settings)
    r = client.get(f"/structures/{SHA}/grid.png", params={"model": model_row})
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
    assert "not stored" in r.json()["detail"] and model_row in r.json()["detail"]


def test_grid_png_of_an_unknown_structure_bad_hash_or_model(client, settings, model_row: str) -> None:  # type: ignore[no-untyped-def]
    r = client.get(f"/structures/{'cd' * 32}/grid.png")
    assert r.status_code == 404 and "no structure" in r.json()["detail"]
    assert client.get("/structures/not-a-hash/grid.png").status_code == 422
    _structure_in_job(settings)
    r = client.get(f"/structures/{SHA}/grid.png", params={"model": "nope:3"})
    assert r.status_code == 422 and "m:1" in r.json()["detail"]  # names the available models


def test_grid_png_only_for_the_owner_of_a_job_with_the_structure(settings, model_row: str) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.db.session import session_scope
    from app.main import create_app
    from app.services.keys import create_key

    auth = settings.model_copy(update={"auth": settings.auth.model_copy(update={"required": True})})
    with session_scope(auth.db_url) as session:
        alice, bob = create_key(session, "alice"), create_key(session, "bob")
        root = create_key(session, "root", admin=True)
    _structure_in_job(auth, owner="alice")
    _store_grid(auth, _grid(0))
    url = f"/structures/{SHA}/grid.png"
    with TestClient(create_app(auth)) as c:
        assert c.get(url).status_code == 401
        assert c.get(url, headers={"Authorization": f"Bearer {alice}"}).status_code == 200
        assert c.get(url, headers={"Authorization": f"Bearer {root}"}).status_code == 200
        r = c.get(url, headers={"Authorization": f"Bearer {bob}"})
        assert r.status_code == 404 and "no structure" in r.json()["detail"]


def test_grid_slices_png_scales_boltzmann_factors_and_energies() -> None:
    from app.api.routes.images import grid_slices_png

    grid = _grid(2)
    boltzmann = grid_slices_png(grid)
    energies = grid_slices_png(-298.0 * np.log(np.maximum(grid, 1e-30)), boltzmann=False)
    assert boltzmann.startswith(PNG_MAGIC) and energies.startswith(PNG_MAGIC) and boltzmann != energies
    zeros = np.zeros((10, 12, 14))
    assert _png_size(grid_slices_png(zeros))[0] > 0  # an empty grid still draws (and a non-cubic one)
    with pytest.raises(ValueError, match="3 axes"):
        grid_slices_png(np.zeros((5, 5)))


# --- model figures ----------------------------------------------------------------------------------------------

def _png(color: str) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [0, 1], color=color)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


@pytest.fixture()
def model_with_figures(settings, tmp_path: Path) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """A registered model folder with a parity plot and a training history (and a PNG in a subfolder)."""
    from app.db.session import session_scope
    from app.services.registry import register_model_dir
    from app.storage import store_from_uri

    folder = tmp_path / "figs-model"
    (folder / "extra").mkdir(parents=True)
    card = {"name": "figs", "version": "2", "voxel_params": {},
            "targets": [{"name": "ch4", "unit": "mol/kg", "property": "CH4 uptake"}]}
    (folder / "card.json").write_text(json.dumps(card))
    figures = {"history": _png("C1"), "parity": _png("C0")}
    for name, data in figures.items():
        (folder / f"{name}.png").write_bytes(data)
    (folder / "extra" / "inner.png").write_bytes(_png("C2"))
    with session_scope(settings.db_url) as session:
        register_model_dir(session, store_from_uri(settings.store_uri), folder)
        register_model_dir(session, store_from_uri(settings.store_uri), folder, owner="alice")
    return figures


def test_model_images_lists_and_serves_the_stored_figures(client, model_with_figures: dict[str, bytes]) -> None:  # type: ignore[no-untyped-def]
    listing = client.get("/models/figs:2/images")
    assert listing.status_code == 200, listing.text
    body = listing.json()
    assert body["model"] == "figs:2"
    assert [i["name"] for i in body["images"]] == ["parity", "history"]  # reading order; subfolders left out
    assert body["images"][0]["title"].startswith("Parity")
    for image in body["images"]:
        r = client.get(image["url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content == model_with_figures[image["name"]]
    assert client.get("/models/figs/images").json()["model"] == "figs:2"  # a bare name: the latest version
    owned = client.get("/models/alice/figs:2/images/parity.png")  # owner/name:version (a '/' in the ref)
    assert owned.status_code == 200 and owned.content == model_with_figures["parity"]


def test_model_images_404_json(client, model_with_figures: dict[str, bytes]) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/models/figs:2/images/calibration.png")
    assert r.status_code == 404 and "no figure 'calibration'" in r.json()["detail"]
    r = client.get("/models/nope:1/images/parity.png")
    assert r.status_code == 404 and "unknown model" in r.json()["detail"]
    assert client.get("/models/nope:1/images").status_code == 404
    # the registry routes still answer beside the image routes
    assert client.get("/models/figs").json()["latest"]["ref"] == "figs:2"
