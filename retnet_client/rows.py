"""Result rows of a screening: the API's items as dicts, ranked, and flattened into a pandas DataFrame."""

from __future__ import annotations

from typing import Any

#: Columns of :func:`flatten`, in the order of the API's CSV (then the ids).
COLUMNS = ["rank", "name", "status", "value", "uncertainty", "in_domain", "unit", "property", "model", "sha256",
           "formula", "n_atoms", "cache_hit", "parse_ms", "voxelize_ms", "inference_ms", "error", "item_id",
           "job_id"]


def flatten(row: dict[str, Any]) -> dict[str, Any]:
    """One item of ``GET /jobs/{id}/results`` as a flat record with the :data:`COLUMNS` (None where absent)."""
    prediction = row.get("prediction") or {}
    structure = row.get("structure") or {}
    timings = row.get("timings") or {}
    return {
        "rank": row.get("rank"), "name": row.get("name"), "status": row.get("status"),
        "value": prediction.get("value"), "uncertainty": prediction.get("uncertainty"),
        "in_domain": prediction.get("in_domain"), "unit": prediction.get("unit"),
        "property": prediction.get("property"), "model": prediction.get("model"),
        "sha256": structure.get("sha256"), "formula": structure.get("formula"), "n_atoms": structure.get("n_atoms"),
        "cache_hit": timings.get("cache_hit"), "parse_ms": timings.get("parse_ms"),
        "voxelize_ms": timings.get("voxelize_ms"), "inference_ms": timings.get("inference_ms"),
        "error": row.get("error"), "item_id": row.get("item_id"), "job_id": row.get("job_id"),
    }


def to_dataframe(rows: list[dict[str, Any]]) -> Any:
    """The rows as a pandas DataFrame with the :data:`COLUMNS` (needs pandas: ``pip install pandas``)."""
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pandas is installed with the service
        raise ImportError("to_dataframe needs pandas: pip install pandas") from exc
    return pd.DataFrame([flatten(r) for r in rows], columns=COLUMNS)


class Rows(list[dict[str, Any]]):
    """A list of result items (best first, failed items last, each with its ``rank``), and the job they came from.

    ``job`` is the final ``GET /jobs/{id}`` answer (None when the rows were fetched without it).
    """

    def __init__(self, items: list[dict[str, Any]] = (), job: dict[str, Any] | None = None) -> None:  # type: ignore[assignment]
        super().__init__(items)
        self.job = job

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The items that did not get a prediction (their ``error`` says why)."""
        return [r for r in self if r.get("status") != "succeeded"]

    def dataframe(self) -> Any:
        """The rows as a pandas DataFrame (see :func:`to_dataframe`)."""
        return to_dataframe(self)
