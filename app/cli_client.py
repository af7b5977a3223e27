"""``retnet client predict|screen|status|results``: use a running RetNet Service over HTTP (``retnet_client``).

Nothing of the service is imported: only :mod:`retnet_client` (httpx) and tqdm, inside the commands. Results
go to stdout (or ``--out``), progress bars and messages to stderr. Exit codes: 0 everything succeeded,
1 something failed (an item, a job, or a job not finished within ``--timeout``), 2 usage error,
3 the request failed (refused by the service, e.g. 401/413/422 on a whole request, or the service unreachable).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REQUEST = 0, 1, 2, 3
DEFAULT_URL = "http://127.0.0.1:8000"
#: Failed items listed on stderr after a screening.
SHOW_FAILED = 10
#: The API's ``units`` choices (``POST /predict``, ``POST /screenings``).
UNITS = ("mol/kg", "cm3(STP)/cm3")


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _client(args: argparse.Namespace) -> Any:
    from retnet_client import Client

    return Client(args.url, api_key=args.api_key or None, timeout=args.http_timeout, retries=args.retries)


def _request_failed(command: str, exc: Any, args: argparse.Namespace) -> int:
    """Print a failed request (with a hint for 401) and return :data:`EXIT_REQUEST`."""
    _err(f"retnet client {command}: error: {exc}")
    if exc.status_code == 401:
        _err("  send an API key with --api-key KEY or the environment variable RETNET_API_KEY"
             + (" (the key given was refused)" if args.api_key else ""))
    return EXIT_REQUEST


def _failure_line(name: str | None, error: str | None) -> str:
    name, error = name or "?", error or "no prediction"
    return f"FAILED {error}" if error.startswith(f"{name}:") or error.startswith(f"{name.rsplit('.', 1)[0]}:") \
        else f"FAILED {name}: {error}"


class _JobBar:
    """A tqdm bar over a job's items (done + failed of total), on stderr; off when stderr is not a terminal."""

    def __init__(self, desc: str, disable: bool | None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=None, desc=desc, unit="cif", file=sys.stderr, dynamic_ncols=True, disable=disable)

    def __call__(self, job: dict[str, Any]) -> None:
        p = job.get("progress") or {}
        total, finished = p.get("total") or 0, (p.get("done") or 0) + (p.get("failed") or 0)
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.n = finished
        self.bar.set_postfix(status=job.get("status"), failed=p.get("failed", 0), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


# --- commands ----------------------------------------------------------------------------------------------


def _cmd_predict(args: argparse.Namespace) -> int:
    from retnet_client import JobFailedError, RetNetError, WaitTimeoutError

    columns = ["name", "value", "uncertainty", "in_domain", "unit", "property", "model", "sha256", "error"]
    table: list[dict[str, Any]] = []
    writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n") if args.format == "csv" else None
    if writer:
        writer.writeheader()
    failed = 0
    with _client(args) as client:
        for path in args.cifs:
            try:
                result = client.predict(path, model=args.model, units=args.units, wait=args.wait)
                row = _predict_row(result, path.stem)
            except RetNetError as exc:
                if _whole_request_failed(exc, (JobFailedError, WaitTimeoutError)):
                    return _request_failed("predict", exc, args)  # every other file would fail the same way
                failed += 1
                row = dict.fromkeys(columns, "") | {"name": path.stem, "error": exc.detail}
                _err(_failure_line(path.name, exc.detail))
                result = {"name": path.name, "error": exc.detail, "status_code": exc.status_code,
                          **({"job_id": exc.job_id} if exc.job_id else {})}
            except OSError as exc:
                failed += 1
                row = dict.fromkeys(columns, "") | {"name": path.stem, "error": str(exc)}
                _err(_failure_line(path.name, str(exc)))
                result = {"name": path.name, "error": str(exc)}
            if args.format == "json":
                print(json.dumps(result), flush=True)
            elif writer:
                writer.writerow(row)
                sys.stdout.flush()
            else:
                table.append(row)
    if args.format == "table":
        _print_table(table, ["name", "value", "uncertainty", "in_domain", "unit", "property", "model", "error"])
    n = len(args.cifs)
    _err(f"predicted {n - failed} of {n} structure(s) via {args.url}; {failed} failed")
    return EXIT_FAILED if failed else EXIT_OK


def _whole_request_failed(exc: Any, per_item: tuple[type, ...]) -> bool:
    """True when an error of one prediction would fail every other one too: no answer, a refused key, the rate
    limit, or the service failing without a job of its own; False for this file's own failure."""
    if isinstance(exc, per_item):
        return False
    status = exc.status_code
    return status is None or status in (401, 403, 429) or (status >= 500 and exc.job_id is None)


def _predict_row(result: dict[str, Any], name: str) -> dict[str, Any]:
    p = result.get("prediction") or {}
    s = result.get("structure") or {}

    def opt(v: Any) -> Any:
        return "" if v is None else v

    value = p.get("value")
    sigma = p.get("uncertainty")
    return {"name": (s.get("name") or name), "value": "" if value is None else f"{value:.6g}",
            "uncertainty": "" if sigma is None else f"{sigma:.3g}", "in_domain": opt(p.get("in_domain")),
            "unit": opt(p.get("unit")), "property": opt(p.get("property")), "model": opt(p.get("model")),
            "sha256": opt(s.get("sha256")), "error": opt(result.get("error"))}


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    print("  ".join("-" * widths[c] for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def _cmd_screen(args: argparse.Namespace) -> int:
    from retnet_client import RetNetError, WaitTimeoutError

    with _client(args) as client:
        try:
            accepted = client.submit_screening(args.sources, model=args.model, name=args.name, units=args.units)
        except (FileNotFoundError, ValueError) as exc:
            _err(f"retnet client screen: error: {exc}")
            return EXIT_USAGE
        except RetNetError as exc:
            return _request_failed("screen", exc, args)
        job_id = accepted["job_id"]
        total = (accepted.get("job") or {}).get("progress", {}).get("total")
        _err(f"screening {job_id}: {total if total is not None else '?'} structure(s) submitted to {args.url}")
        if args.no_wait:
            print(job_id)
            return EXIT_OK
        bar = _JobBar(f"screen {job_id[:8]}", disable=True if args.quiet else None)
        try:
            job = client.wait(job_id, timeout=args.timeout, poll=args.poll, progress=bar)
        except WaitTimeoutError as exc:
            bar.close()
            _err(f"retnet client screen: {exc.detail}")
            return EXIT_FAILED
        except RetNetError as exc:
            bar.close()
            return _request_failed("screen", exc, args)
        bar.close()
        try:
            if args.out:
                client.download(job_id, args.out, order=args.order)
            else:
                sys.stdout.write(client.results(job_id, format="csv", order=args.order))  # type: ignore[arg-type]
                sys.stdout.flush()
            return _report_job(client, job, args.out)
        except RetNetError as exc:
            return _request_failed("screen", exc, args)


def _report_job(client: Any, job: dict[str, Any], out: Any) -> int:
    """Summary on stderr (the failed items first); the exit code of a finished job."""
    p = job.get("progress") or {}
    done, failed, total = p.get("done", 0), p.get("failed", 0), p.get("total", 0)
    if failed:
        # failed items come last in the ranking: read only those
        for item in client.results(job["id"], offset=max(0, total - failed), limit=min(failed, SHOW_FAILED)):
            if item.get("status") != "succeeded":
                _err(_failure_line(item.get("name"), item.get("error")))
        if failed > SHOW_FAILED:
            _err(f"… and {failed - SHOW_FAILED} more (the CSV's status and error columns list them all)")
    where = f"; wrote {out}" if out else ""
    model = f" with {job['model']}" if job.get("model") else ""
    _err(f"screening {job['id']} {job['status']}: predicted {done} of {total} structure(s){model}; "
         f"{failed} failed{where}")
    if job.get("error"):
        _err(f"  job error: {job['error']}")
    return EXIT_OK if job.get("status") == "succeeded" and not failed else EXIT_FAILED


def _job_exit(job: dict[str, Any]) -> int:
    """0 for a job that is not failed/cancelled and has no failed item, else 1."""
    failed = (job.get("progress") or {}).get("failed", 0)
    return EXIT_FAILED if job.get("status") in ("failed", "cancelled") or failed else EXIT_OK


def _cmd_design(args: argparse.Namespace) -> int:
    from app.cli_design import client_design
    from retnet_client import RetNetError

    with _client(args) as client:
        try:
            return client_design(args, client)
        except RetNetError as exc:
            return _request_failed("design", exc, args)


def _cmd_status(args: argparse.Namespace) -> int:
    from retnet_client import RetNetError, WaitTimeoutError

    with _client(args) as client:
        try:
            if args.wait:
                bar = _JobBar(f"job {args.job_id[:8]}", disable=True if args.quiet else None)
                try:
                    job = client.wait(args.job_id, timeout=args.timeout, poll=args.poll, progress=bar)
                finally:
                    bar.close()
            else:
                job = client.status(args.job_id)
        except WaitTimeoutError as exc:
            print(json.dumps(exc.job, indent=2))
            _err(f"retnet client status: {exc.detail}")
            return EXIT_FAILED
        except RetNetError as exc:
            return _request_failed("status", exc, args)
    print(json.dumps(job, indent=2))
    p = job.get("progress") or {}
    _err(f"job {job['id']} ({job.get('kind')}) {job['status']}: {p.get('done', 0)} done, {p.get('failed', 0)} "
         f"failed of {p.get('total', 0)}")
    return _job_exit(job)


def _cmd_results(args: argparse.Namespace) -> int:
    from retnet_client import RetNetError

    with _client(args) as client:
        try:
            job = client.status(args.job_id)
            if args.format == "csv" and args.out:
                client.download(args.job_id, args.out, order=args.order)
                _err(f"wrote {args.out}")
            elif args.format == "csv":
                sys.stdout.write(client.results(args.job_id, format="csv", order=args.order))  # type: ignore[arg-type]
            else:
                rows = client.results(args.job_id, format="json", order=args.order)
                text = json.dumps(list(rows), indent=2)
                if args.out:
                    with open(args.out, "w", encoding="utf-8") as fh:
                        fh.write(text + "\n")
                    _err(f"wrote {args.out}")
                else:
                    print(text)
        except RetNetError as exc:
            return _request_failed("results", exc, args)
    if job["status"] not in ("succeeded", "failed", "cancelled"):
        _err(f"job {job['id']} is still {job['status']}: these results are partial")
    return _job_exit(job)


# --- parser ------------------------------------------------------------------------------------------------


def _connection_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("service")
    g.add_argument("--url", default=os.environ.get("RETNET_URL", DEFAULT_URL),
                   help="base URL of the service (default: $RETNET_URL or %(default)s)")
    g.add_argument("--api-key", default=os.environ.get("RETNET_API_KEY"), metavar="KEY",
                   help="API key, sent as 'Authorization: Bearer KEY' (default: $RETNET_API_KEY; prefer the "
                        "variable: arguments are visible to other users of the machine)")
    g.add_argument("--http-timeout", type=float, default=60.0, metavar="S",
                   help="timeout of each HTTP operation in s (default: %(default)s)")
    g.add_argument("--retries", type=int, default=5, metavar="N",
                   help="retries of a request after a transient failure (no answer, 429, 502, 503, 504), waiting "
                        "Retry-After when given (default: %(default)s)")
    return parent


def _wait_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="give up waiting after S s (exit code 1; the job goes on). Default: no limit")
    p.add_argument("--poll", type=float, default=1.0, metavar="S",
                   help="longest interval between two status requests in s (default: %(default)s)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _units_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--units", choices=UNITS, default=None,
                   help="unit of the values, converted by the service: mol/kg (the model's) or cm3(STP)/cm3 "
                        "(volumetric, from each crystal's density; STP = 273.15 K, 1 atm). Default: mol/kg")


def register_client(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``client`` command (predict, screen, status, results over HTTP) to the ``retnet`` parser."""
    from pathlib import Path

    parent = _connection_options()
    p = sub.add_parser("client", help="use a running service over HTTP: predict, screen, status, results",
                       description="Call a RetNet Service's HTTP API (started with `retnet serve` or docker compose) "
                       "instead of running the model here. Exit codes: 0 all succeeded, 1 an item or job failed "
                       "(or --timeout passed), 2 usage, 3 a request was refused or the service unreachable.")
    cs = p.add_subparsers(dest="client_command", metavar="ACTION", required=True)

    q = cs.add_parser("predict", parents=[parent], help="predict CIF files, one request each",
                      description="POST /predict for each CIF; prints the predictions (value in the model's unit, "
                      "or --units). A file the service refuses (not a CIF, invalid structure) is reported and "
                      "skipped; the exit code is 1 if any failed.")
    q.add_argument("cifs", nargs="+", type=Path, metavar="CIF")
    q.add_argument("--model", default=None, help="model name or name:version (default: the service's default)")
    _units_option(q)
    q.add_argument("--wait", type=float, default=300.0, metavar="S",
                   help="seconds to wait for each prediction (default: %(default)s)")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table (default), csv (name,value,...) or json (the API's answer, one object a line)")
    q.set_defaults(func=_cmd_predict)

    q = cs.add_parser("screen", parents=[parent], help="screen CIF files, folders or zips as one job",
                      description="POST /screenings with the CIFs (folders are searched for *.cif and *.zip; "
                      "more than 100 CIFs are zipped in memory into one upload), follow the job with a progress "
                      "bar (stderr), then write the ranked CSV (best first, failed items last with their error). "
                      "The exit code is 1 if any structure failed.")
    q.add_argument("sources", nargs="+", metavar="PATH", help="CIF files, folders of CIFs, zips of CIFs")
    q.add_argument("--out", type=Path, default=None, metavar="CSV", help="write the CSV here (default: stdout)")
    q.add_argument("--model", default=None, help="model name or name:version (default: the service's default)")
    q.add_argument("--name", default=None, help="a label for the screening")
    _units_option(q)
    q.add_argument("--order", choices=("desc", "asc", "input"), default="desc",
                   help="rows by predicted value (desc, default; asc) or in upload order (input)")
    q.add_argument("--no-wait", action="store_true", help="print the job id and exit at once")
    _wait_options(q)
    q.set_defaults(func=_cmd_screen)

    from app.cli_design import design_options

    q = cs.add_parser("design", parents=[parent], help="rank known structures against a target (POST /design)",
                      description="POST /design: the service ranks every structure you predicted with the model "
                      "and the model's library of CoRE MOF 2019 predictions by distance to the target, and this "
                      "prints the top candidates. Exit code 1 when the job failed, 3 when it was refused.")
    design_options(q)
    q.add_argument("--timeout", type=float, default=600.0, metavar="S", help="seconds to wait (default: %(default)s)")
    q.set_defaults(func=_cmd_design)

    q = cs.add_parser("status", parents=[parent], help="a job's status and progress (JSON)",
                      description="GET /jobs/{id}. The exit code is 1 when the job failed or was cancelled, or "
                      "any of its items failed.")
    q.add_argument("job_id", metavar="JOB_ID")
    q.add_argument("--wait", action="store_true", help="wait until the job is final (progress bar on stderr)")
    _wait_options(q)
    q.set_defaults(func=_cmd_status)

    q = cs.add_parser("results", parents=[parent], help="a job's results (CSV or JSON)",
                      description="GET /jobs/{id}/results: every item, best first (CSV streamed; JSON fetched "
                      "page by page). The exit code is 1 when the job or any item failed.")
    q.add_argument("job_id", metavar="JOB_ID")
    q.add_argument("--format", choices=("csv", "json"), default="csv", help="csv (default) or json")
    q.add_argument("--out", type=Path, default=None, metavar="FILE", help="write here (default: stdout)")
    q.add_argument("--order", choices=("desc", "asc", "input"), default="desc",
                   help="by predicted value (desc, default; asc) or upload order (input)")
    q.set_defaults(func=_cmd_results)
