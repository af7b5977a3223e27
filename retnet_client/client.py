"""The RetNet Service client: predict one CIF, screen many, follow jobs and fetch their results over HTTP.

Talks to the REST API only (``POST /predict``, ``POST /screenings``, ``GET /jobs/{id}``,
``GET /jobs/{id}/results``); it imports nothing of the service, so it installs and runs without torch.

Examples
--------
>>> from retnet_client import Client                                              # doctest: +SKIP
>>> with Client("http://127.0.0.1:8000") as client:                               # doctest: +SKIP
...     client.predict("KEGZOL04_clean.cif")["prediction"]["value"]               # mol/kg
...     rows = client.screen("cifs/", name="my-screen", progress=print)           # best first
...     rows.dataframe().head()
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import quote

from retnet_client.errors import JobFailedError, WaitTimeoutError
from retnet_client.retry import RetryPolicy
from retnet_client.rows import Rows
from retnet_client.transport import Transport, json_or_none, new_idempotency_key
from retnet_client.uploads import LOOSE_MAX_FILES, Source, gather, pack

#: Final job statuses.
FINAL = ("succeeded", "failed", "cancelled")
#: Seconds one ``POST /predict`` asks the service to hold the answer (the API allows up to 600); beyond it the
#: client polls ``GET /jobs/{id}``.
SERVER_WAIT_S = 30.0
#: Items per ``GET /jobs/{id}/results`` page (the API allows up to 10,000).
RESULTS_PAGE = 1000
#: Read timeout (s) of a screening submission: the service stores every CIF before it answers.
SUBMIT_TIMEOUT_S = 600.0
#: First poll interval (s); it grows by half each poll up to ``poll``.
FIRST_POLL_S = 0.2

Progress = Callable[[dict[str, Any]], None]
CifInput = str | os.PathLike[str] | bytes | bytearray | IO[bytes]


def _job_path(job_id: str, suffix: str = "") -> str:
    return f"/jobs/{quote(str(job_id), safe='')}{suffix}"


def read_cif(cif: CifInput, name: str | None = None) -> tuple[str, bytes]:
    """(file name, bytes) of a path, bytes or binary file object; bytes without ``name`` are ``structure.cif``."""
    if isinstance(cif, bytes | bytearray):
        return name or "structure.cif", bytes(cif)
    if isinstance(cif, str | os.PathLike):
        path = Path(cif)
        return name or path.name, path.read_bytes()
    data = cif.read()
    return name or Path(str(getattr(cif, "name", "structure.cif"))).name, data


class Client:
    """A client of one RetNet Service.

    Parameters
    ----------
    url
        Base URL of the service, e.g. ``http://127.0.0.1:8000``.
    api_key
        Sent as ``Authorization: Bearer <key>`` (needed when the service requires keys; ``retnet keys create``).
    timeout
        Timeout of each HTTP operation in s (connect, read, write).
    retries
        Further attempts after a transient failure (no answer, 429, 502, 503, 504), waiting ``Retry-After`` when
        the answer has one, else exponential backoff from ``backoff`` s. Submissions keep one
        ``Idempotency-Key`` over their attempts, so a retry never submits twice.
    poll
        Longest interval in s between two ``GET /jobs/{id}`` while waiting.
    server_wait
        Seconds one ``POST /predict`` asks the service to hold its answer (0…600); a prediction not ready by
        then is answered 202 and the client polls the job.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 5, *, backoff: float = 0.5, poll: float = 1.0,
                 server_wait: float = SERVER_WAIT_S) -> None:
        self.timeout = timeout
        self.poll = poll
        self.server_wait = server_wait
        self.transport = Transport(url, api_key=api_key, timeout=timeout,
                                   policy=RetryPolicy(retries=retries, backoff_s=backoff))

    @property
    def url(self) -> str:
        """Base URL of the service."""
        return self.transport.url

    def close(self) -> None:
        """Close the connections."""
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- service ---------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /health``: mode, database, broker, storage and model states."""
        return dict(self.transport.request("GET", "/health").json())

    def models(self) -> dict[str, Any]:
        """``GET /models``: every registered model version (``data``) and the ``default`` one."""
        return dict(self.transport.request("GET", "/models").json())

    # --- one structure ---------------------------------------------------------------------------------

    def predict(self, cif: CifInput, model: str | None = None, units: str | None = None,
                wait: float | None = 300.0, *, name: str | None = None) -> dict[str, Any]:
        """Predict one structure; return the result (``prediction``, ``structure``, ``timings``, ``job_id``…).

        Parameters
        ----------
        cif
            A CIF path, its bytes, or a binary file object.
        model
            ``name`` or ``name:version``; None: the service's default model.
        units
            The ``units`` field of the API: the unit the service gives ``value`` and ``uncertainty`` in, e.g.
            ``mol/kg`` (the model's) or ``cm3(STP)/cm3`` (volumetric, from the crystal's density). None: the
            service's default (the model's unit). A unit the service does not offer is a 422 naming those it does.
        wait
            Seconds to wait for the result in all (None: no limit). The service holds the request up to
            ``server_wait`` s (30); after that the client polls the job.
        name
            File name to send (default: the path's name; ``structure.cif`` for bytes).

        Raises
        ------
        RetNetError
            The service refused the request: 422 for a file that is not a valid CIF (``detail`` says why),
            401 without a valid API key, 413 over a size limit, 5xx when the prediction failed inside it.
        JobFailedError
            The job ended failed or cancelled while the client was polling it.
        WaitTimeoutError
            Not done within ``wait`` s; the job goes on (``error.job_id``, :meth:`wait`).
        """
        filename, data = read_cif(cif, name)
        started = time.monotonic()
        hold = self.server_wait if wait is None else max(0.0, min(wait, self.server_wait))
        form = {"wait": f"{hold:g}"}
        if model:
            form["model"] = model
        if units:
            form["units"] = units
        response = self.transport.request(
            "POST", "/predict", data=form, files=lambda: [("file", (filename, data, "chemical/x-cif"))],
            idempotency_key=new_idempotency_key(), timeout=max(self.timeout, hold + 30.0))
        body = response.json()
        if response.status_code == 202:
            remaining = None if wait is None else max(0.0, wait - (time.monotonic() - started))
            job = self.wait(body["job_id"], timeout=remaining)
            body = self._only_result(job)
        return dict(body)

    def _only_result(self, job: dict[str, Any]) -> dict[str, Any]:
        """The one item of a final prediction job; JobFailedError when it has no prediction."""
        page = self.transport.request("GET", _job_path(job["id"], "/results"),
                                      params={"limit": 1, "order": "input"}).json()
        items = page.get("items") or []
        item = items[0] if items else {}
        if job["status"] != "succeeded" or item.get("prediction") is None:
            reason = item.get("error") or job.get("error") or f"the job ended {job['status']}"
            raise JobFailedError(reason, job=job, body={"job_id": job["id"], **item})
        return dict(item)

    # --- many structures -------------------------------------------------------------------------------

    def submit_screening(self, sources: Source | Iterable[Source], model: str | None = None,
                         name: str | None = None, *, units: str | None = None,
                         loose_max_files: int = LOOSE_MAX_FILES) -> dict[str, Any]:
        """Submit a screening (``POST /screenings``); return the 202 answer (``job_id``, ``status``, ``job``).

        ``sources``: CIF files, folders (searched recursively for ``*.cif`` and ``*.zip``), zips of CIFs and
        ``(name, bytes)`` pairs. More than ``loose_max_files`` CIFs are zipped into one part (in memory).
        ``units``: see :meth:`predict` (the job's JSON and CSV results, and their ranking, are in it).
        """
        cifs, zips = gather(sources)
        form = {k: v for k, v in (("model", model), ("name", name), ("units", units)) if v}
        with pack(cifs, zips, loose_max_files=loose_max_files) as batch:
            response = self.transport.request("POST", "/screenings", data=form, files=batch.files,
                                              idempotency_key=new_idempotency_key(),
                                              timeout=max(self.timeout, SUBMIT_TIMEOUT_S))
        return dict(response.json())

    def screen(self, sources: Source | Iterable[Source], model: str | None = None, name: str | None = None,
               wait: bool = True, progress: Progress | None = None, *, units: str | None = None,
               timeout: float | None = None, loose_max_files: int = LOOSE_MAX_FILES) -> Rows | dict[str, Any]:
        """Screen many structures and return their result rows, best first (failed items last, with ``error``).

        Parameters
        ----------
        sources
            CIF files, folders, zips of CIFs, ``(name, bytes)`` pairs (see :meth:`submit_screening`).
        model, name
            Model (``name`` or ``name:version``; None: the default) and a label for the screening.
        wait
            False: return the 202 answer at once (``job_id``; follow it with :meth:`wait` and :meth:`results`).
        progress
            Called with the job (``GET /jobs/{id}``: ``progress`` = ``{done, failed, total}``) after each poll.
        units
            Unit of the results, JSON and CSV (see :meth:`predict`).
        timeout
            Seconds to wait for the job (None: no limit); WaitTimeoutError after it.

        Returns
        -------
        Rows
            A list of the API's result items (each with ``rank``); ``rows.job`` is the final job,
            ``rows.failed`` the items without a prediction, ``rows.dataframe()`` a pandas DataFrame.

        Raises
        ------
        JobFailedError
            The screening as a whole ended failed or cancelled (``client.results(error.job_id)`` has what
            finished).
        """
        accepted = self.submit_screening(sources, model, name, units=units, loose_max_files=loose_max_files)
        if not wait:
            return accepted
        job = self.wait(accepted["job_id"], timeout=timeout, progress=progress)
        if job["status"] != "succeeded":
            raise JobFailedError(job.get("error") or f"the screening ended {job['status']}", job=job)
        rows = self.results(job["id"])
        assert isinstance(rows, Rows)
        rows.job = job
        return rows

    # --- jobs ------------------------------------------------------------------------------------------

    def status(self, job_id: str) -> dict[str, Any]:
        """``GET /jobs/{id}``: ``status`` (queued, running, succeeded, failed, cancelled), ``progress`` …"""
        return dict(self.transport.request("GET", _job_path(job_id)).json())

    def wait(self, job_id: str, timeout: float | None = None, poll: float | None = None,
             progress: Progress | None = None) -> dict[str, Any]:
        """Poll ``GET /jobs/{id}`` until the job is final; return it.

        The first poll is at once, then every 0.2 s growing to ``poll`` s (default: the client's). ``progress``
        is called with each answer. WaitTimeoutError after ``timeout`` s (None: no limit); the job goes on.
        """
        longest = self.poll if poll is None else poll
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = min(FIRST_POLL_S, longest)
        while True:
            job = self.status(job_id)
            if progress is not None:
                progress(job)
            if job["status"] in FINAL:
                return job
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                p = job.get("progress") or {}
                raise WaitTimeoutError(f"job {job_id} is still {job['status']} after {timeout:g} s "
                                       f"({p.get('done', 0) + p.get('failed', 0)} of {p.get('total', '?')} items "
                                       "done); it goes on: wait for it again or fetch its results later", job=job)
            time.sleep(interval if deadline is None else min(interval, max(0.0, deadline - now)))
            interval = min(interval * 1.5, longest)

    def results(self, job_id: str, format: Literal["json", "csv"] = "json",
                order: Literal["desc", "asc", "input"] = "desc", *, offset: int = 0, limit: int | None = None,
                page_size: int = RESULTS_PAGE) -> Rows | str:
        """The items of a job: ``json`` → :class:`Rows` (every page of ``GET /jobs/{id}/results``), ``csv`` →
        the service's CSV text (ranked, one header line). ``order``: by predicted value (``desc``/``asc``, failed
        items last) or upload order (``input``); ``offset``/``limit``: a window of them (default: all). Fetch
        after the job is final for a stable ranking."""
        if format == "csv":
            params: dict[str, Any] = {"format": "csv", "order": order, "offset": offset}
            if limit is not None:
                params["limit"] = limit
            return self.transport.request("GET", _job_path(job_id, "/results"), params=params).text
        if format != "json":
            raise ValueError(f"format must be 'json' or 'csv', not {format!r}")
        rows = Rows()
        position, end, total = offset, None if limit is None else offset + limit, None
        while (total is None or position < total) and (end is None or position < end):
            size = page_size if end is None else min(page_size, end - position)
            page = self.transport.request("GET", _job_path(job_id, "/results"),
                                          params={"limit": size, "offset": position, "order": order}).json()
            items = page.get("items") or []
            total = int(page.get("total", 0))
            rows += [{**item, "rank": position + i + 1} for i, item in enumerate(items)]
            position += len(items)
            if not items:
                break
        return rows

    def download(self, job_id: str, path: str | os.PathLike[str],
                 order: Literal["desc", "asc", "input"] = "desc") -> Path:
        """Stream a job's CSV results (``GET /jobs/{id}/results?format=csv``) to ``path``; return the path.

        The file is written next to ``path`` and renamed into place once complete.
        """
        out = Path(path)
        partial = out.with_name(f".{out.name}.part")
        response = self.transport.request("GET", _job_path(job_id, "/results"),
                                          params={"format": "csv", "order": order}, stream=True)
        try:
            with partial.open("wb") as fh:
                for chunk in response.iter_bytes():
                    fh.write(chunk)
            partial.replace(out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            response.close()
        return out

    def design(self, target: dict[str, float], tolerance: float | dict[str, float], model: str | None = None, *,
               units: str | None = None, top_k: int = 10, in_domain_only: bool = False,
               sources: Iterable[str] = ("service", "library"), name: str | None = None, wait: bool = True,
               timeout: float | None = None) -> dict[str, Any]:
        """Which known structures come closest to a target (``POST /design``)? Returns the job's ``result``
        (``candidates``, best first, each with ``predicted``, ``uncertainty``, ``in_domain``, ``distance``,
        ``within_tolerance``, ``p_within``), or with ``wait=False`` the 202 answer.

        ``target``: quantity → value in ``units``, e.g. ``{"uptake_65bar": 12.0, "uptake_5.8bar": 4.0}``
        (``value`` for a model's single output); ``tolerance``: one half-width, or one per quantity.
        """
        body: dict[str, Any] = {"target": target, "tolerance": tolerance, "top_k": top_k,
                                "in_domain_only": in_domain_only, "sources": list(sources)}
        for key, value in (("model", model), ("units", units), ("name", name)):
            if value:
                body[key] = value
        accepted = dict(self.transport.request("POST", "/design", json=body,
                                               idempotency_key=new_idempotency_key()).json())
        if not wait:
            return accepted
        job = self.wait(accepted["job_id"], timeout=timeout)
        if job["status"] != "succeeded":
            raise JobFailedError(f"design job {job['id']} {job['status']}: {job.get('error') or 'no reason given'}",
                                 job=job)
        return dict(job.get("result") or {})

    def cancel(self, job_id: str) -> dict[str, Any]:
        """``POST /jobs/{id}/cancel``: a queued or running job becomes cancelled (409 RetNetError when final)."""
        response = self.transport.request("POST", _job_path(job_id, "/cancel"))
        return dict(json_or_none(response) or {})
