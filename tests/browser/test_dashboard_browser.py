"""The dashboard in a real headless Chromium against a real ``retnet serve``: what a chemist clicks and reads.

One CIF uploaded and its prediction read; a 10-CIF CoRE MOF screening (plus one broken file) dropped, followed and
its ranked table read and re-sorted; the models page with its cards and figures; the API-key prompt of a server
that requires keys. A screenshot of each page goes to ``$RETNET_SCREENSHOTS_DIR``.
"""

from __future__ import annotations

import json
import math
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import MODEL_NAME, MODEL_VERSION, coremof_cifs

TIMEOUT_S = 45


def _get(url: str, key: str | None = None) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        body = answer.read()
        return json.loads(body) if answer.headers.get_content_type() == "application/json" else body.decode()


def _wait(driver: Any, condition: Any, timeout: float = TIMEOUT_S, message: str = "") -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message)


def _js(script: str) -> Any:
    """A wait condition: the script's value when truthy."""
    return lambda driver: driver.execute_script(script)


def _image_loaded(selector: str) -> Any:
    return _js(f"const i = document.querySelector({json.dumps(selector)}); "
               "return i && i.complete && i.naturalWidth > 0 ? [i.naturalWidth, i.naturalHeight] : null")


def _number(text: str) -> float:
    return float(text.replace("−", "-").replace(",", ""))


def _table(driver: Any, selector: str) -> tuple[list[str], list[list[str]]]:
    """Header labels and cell texts of a rendered table."""
    return driver.execute_script(
        "const t = document.querySelector(arguments[0]);"
        "return [[...t.tHead.rows[0].cells].map(c => c.textContent.trim()),"
        "        [...t.tBodies[0].rows].map(r => [...r.cells].map(c => c.textContent.trim()))];", selector)


def _default_model(server: Any) -> dict[str, Any]:
    models = _get(f"{server.url}/models")
    return next(m for m in models["data"] if m["ref"] == models["default"])


def test_upload_one_cif_and_read_its_prediction(browser, server, screenshot, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{server.url}/")
    browser.execute_script("localStorage.clear()")  # a first visit: no kept choices
    browser.refresh()
    default = _default_model(server)
    _wait(browser, _js("return document.querySelectorAll('#model-select option[value]:not([value=\"\"])').length >= 2"),
          message="the model list did not load")
    choice = Select(browser.find_element(By.ID, "model-select"))
    assert choice.first_selected_option.get_attribute("value") == default["ref"]  # the default model preselected
    assert f"{MODEL_NAME}:{MODEL_VERSION}" in [o.get_attribute("value") for o in choice.options]

    browser.find_element(By.ID, "file-input").send_keys(str(cif_dir / "KEGZOL04_clean.cif"))
    button = browser.find_element(By.ID, "submit-button")
    assert button.is_enabled() and "Predict" in button.text
    button.click()
    value = _wait(browser, _js("return document.querySelector('#current-job [data-testid=prediction-value]')"),
                  message="no prediction appeared")
    grid_size = _wait(browser, _image_loaded("#current-job img.grid-image"), message="no energy-grid picture")
    assert grid_size[0] > 2 * grid_size[1]  # three slices side by side

    job_link = browser.find_element(By.CSS_SELECTOR, "#current-job .job-summary a")
    job_id = job_link.get_attribute("href").rsplit("/", 1)[-1]
    api = _get(f"{server.url}/jobs/{job_id}/results")["items"][0]
    shown = value.find_element(By.CSS_SELECTOR, ".number").text
    assert math.isclose(_number(shown), api["prediction"]["value"], rel_tol=1e-3)
    assert value.find_element(By.CSS_SELECTOR, ".unit").text == api["prediction"]["unit"] == "mol/kg"
    card = browser.find_element(By.CSS_SELECTOR, "#current-job article.prediction").text
    assert api["prediction"]["model"] in card and api["structure"]["formula"] in card
    assert "parse" in card and "inference" in card and " ms" in card  # timings
    if api["prediction"].get("uncertainty") is not None:
        assert "±" in value.text and "σ =" in card
    if api["prediction"].get("in_domain") is not None:
        assert ("in domain" if api["prediction"]["in_domain"] else "outside the domain") in card
    for neighbour in api["prediction"].get("neighbours") or []:
        assert neighbour["name"] in card
    listed = f"#job-list-table tr[data-job-id='{job_id}']"
    row = _wait(browser, lambda d: next((r for r in d.find_elements(By.CSS_SELECTOR, listed) if "finished" in r.text),
                                        None), message="the job list does not show the finished job")
    assert row.find_element(By.TAG_NAME, "a").get_attribute("href") == f"{server.url}/ui/jobs/{job_id}"
    screenshot("dashboard")

    job_link.click()  # the job's own page shows the same prediction
    _wait(browser, _image_loaded("#job img.grid-image"), message="job page: no energy-grid picture")
    page_value = browser.find_element(By.CSS_SELECTOR, "#job [data-testid=prediction-value] .number").text
    assert page_value == shown and browser.find_element(By.CSS_SELECTOR, "#job h1").text.startswith("Prediction")
    screenshot("job-prediction")

    browser.get(f"{server.url}/")  # another model, chosen in the list, predicts the same file
    _wait(browser, _js("return document.querySelectorAll('#model-select option').length >= 2"))
    Select(browser.find_element(By.ID, "model-select")).select_by_value(f"{MODEL_NAME}:{MODEL_VERSION}")
    browser.find_element(By.ID, "file-input").send_keys(str(cif_dir / "KEGZOL04_clean.cif"))
    browser.find_element(By.ID, "submit-button").click()
    other = _wait(browser, _js("return document.querySelector('#current-job article.prediction dl')"))
    assert f"{MODEL_NAME}:{MODEL_VERSION}" in other.text


DROP = """
const [names, texts] = arguments;
const data = new DataTransfer();
names.forEach((name, i) => data.items.add(new File([texts[i]], name, {type: "chemical/x-cif"})));
document.getElementById("dropzone").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true,
                                                                           cancelable: true}));
"""


def test_drop_ten_cifs_watch_the_screening_and_read_the_ranked_table(browser, server, screenshot) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    files = coremof_cifs(10)
    assert len(files) == 10
    names = [p.name for p in files] + ["broken.cif"]
    texts = [p.read_text() for p in files] + ["this is not a crystal structure\n"]
    browser.get(f"{server.url}/")
    _wait(browser, _js("return document.querySelectorAll('#model-select option[value]:not([value=\"\"])').length"))
    browser.execute_script(DROP, names, texts)
    button = browser.find_element(By.ID, "submit-button")
    assert button.text == "Screen 11 files"
    assert "11 files (11 CIF)" in browser.find_element(By.ID, "selection").text
    browser.find_element(By.ID, "screening-name").send_keys("CoRE MOF sample")
    button.click()

    seen: list[str] = []  # what the progress bar said while it ran

    def finished(driver: Any) -> bool:
        # one script reads both, so the words and the state come from the same moment of the page
        text, done = driver.execute_script(
            "return [document.querySelector('#current-job .progress-text')?.textContent,"
            " document.querySelector('#current-job .job-summary [data-status=succeeded]') !== null"
            " && document.querySelectorAll('#results-table tbody tr').length === 11]")
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        return bool(done)

    _wait(browser, finished, message="the screening did not finish in the browser")
    assert seen[-1] == "11 of 11 structures (1 failed)", seen
    bar = browser.find_element(By.CSS_SELECTOR, "#current-job .job-summary progress")
    assert bar.get_attribute("value") == bar.get_attribute("max") == "11"

    headers, rows = _table(browser, "#results-table")
    job_id = browser.find_element(By.CSS_SELECTOR, "#current-job .job-summary a").get_attribute("href").rsplit("/")[-1]
    api = _get(f"{server.url}/jobs/{job_id}/results")
    unit = api["items"][0]["prediction"]["unit"]
    value_col = next(i for i, h in enumerate(headers) if h.startswith(api["items"][0]["prediction"]["property"]))
    assert f"({unit})" in headers[value_col] and "Time (ms)" in headers  # units in the headers
    assert [r[1] for r in rows] == [i["structure"]["name"] if i["structure"] else i["name"] for i in api["items"]]
    values = [_number(r[value_col]) for r in rows[:10]]
    assert values == sorted(values, reverse=True)  # ranked, best first
    for shown, item in zip(values, api["items"][:10], strict=True):
        assert math.isclose(shown, item["prediction"]["value"], rel_tol=1e-3)
    failed = rows[10]
    assert failed[1] == "broken.cif" and any("failed: " in c and "not a CIF" in c for c in failed)  # in words
    summary = browser.find_element(By.CSS_SELECTOR, "#current-job .results-summary").text
    assert "11 structures" in summary and "10 predicted" in summary and "1 failed" in summary

    listed = f"#job-list-table tr[data-job-id='{job_id}'] [data-status=succeeded]"
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, listed), message="the job list lags behind")
    screenshot("dashboard-screening")

    sort = browser.find_element(By.CSS_SELECTOR, f"#results-table thead th:nth-child({value_col + 1}) button")
    sort.click()  # a click sorts by that column, highest first for a prediction; again: lowest first
    sort.click()
    _, ascending = _table(browser, "#results-table")
    low = [_number(r[value_col]) for r in ascending if r[value_col] != "–"]
    assert low == sorted(values) and ascending[-1][1] == "broken.cif"  # empty values last either way
    name_sort = browser.find_element(By.CSS_SELECTOR, "#results-table thead th:nth-child(2) button")
    name_sort.click()
    _, by_name = _table(browser, "#results-table")
    assert [r[1] for r in by_name] == sorted((r[1] for r in rows), key=str.lower)

    csv = browser.find_element(By.LINK_TEXT, "Download ranked CSV")
    assert csv.get_attribute("href").endswith(f"/jobs/{job_id}/results?format=csv")
    lines = _get(csv.get_attribute("href")).strip().splitlines()
    assert len(lines) == 12 and lines[0].startswith("rank,name")
    assert [line.split(",")[1] for line in lines[1:]] == [i["name"] for i in api["items"]]  # same ranking

    browser.get(f"{server.url}/ui/jobs/{job_id}")  # its page: the same ranked table, read from the API
    _wait(browser, _js("return document.querySelectorAll('#results-table tbody tr').length === 11"))
    assert browser.find_element(By.CSS_SELECTOR, "#job h1").text == "CoRE MOF sample"
    _, page_rows = _table(browser, "#results-table")
    assert [r[1] for r in page_rows] == [r[1] for r in rows]
    browser.find_element(By.CSS_SELECTOR, "#results-table tbody tr:first-child button.link").click()
    _wait(browser, _image_loaded(".structure-detail img.grid-image"), message="no grid for the clicked structure")
    assert rows[0][1] in browser.find_element(By.CSS_SELECTOR, ".structure-detail h3").text
    screenshot("job-screening")


def test_models_page_shows_cards_metrics_and_figures(browser, server, screenshot) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    models = _get(f"{server.url}/models")["data"]
    browser.get(f"{server.url}/ui/models")
    _wait(browser, _js(f"return document.querySelectorAll('section.model-card').length === {len(models)}"))
    for m in models:
        card = browser.find_element(By.CSS_SELECTOR, f"section.model-card[data-ref='{m['ref']}']")
        assert m["ref"] in card.find_element(By.TAG_NAME, "h2").text
        for target in m["targets"]:
            assert target["name"] in card.text and target["unit"] in card.text
    shipped = next((m for m in models if m["shipped"]), None)
    if shipped is None:
        pytest.skip("no shipped model in this installation")
    test_metrics = shipped["metrics"].get("test") or shipped["metrics"]
    r2 = test_metrics["r2"]
    expected = f"{r2['value']:.3f} [{r2['ci_low']:.3f}, {r2['ci_high']:.3f}]"
    card = browser.find_element(By.CSS_SELECTOR, f"section.model-card[data-ref='{shipped['ref']}']")
    assert expected in card.text  # R² with its 95 % CI, as the card has it
    unit = shipped["targets"][0]["unit"]
    assert f"MAE ({unit})" in card.text
    images = _get(f"{server.url}/models/{shipped['ref']}/images")["images"]
    assert "parity" in [i["name"] for i in images]
    figures = f"section.model-card[data-ref='{shipped['ref']}'] img"
    for image in images:
        _wait(browser, _image_loaded(f"{figures}[data-name='{image['name']}']"), message=f"no figure {image['name']}")
    test_card = browser.find_element(By.CSS_SELECTOR, f"section.model-card[data-ref='{MODEL_NAME}:{MODEL_VERSION}']")
    _wait(browser, lambda _: "without figures" in test_card.text)
    screenshot("models")


def test_a_server_that_requires_keys_asks_once_and_sends_the_key(browser, key_server, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    server, key = key_server
    try:
        browser.get(f"{server.url}/")
        browser.execute_script("localStorage.clear()")
        browser.refresh()
        field = _wait(browser, _js("return document.querySelector('dialog[open] #api-key-input')"),
                      message="no key prompt")
        assert "API key" in browser.find_element(By.ID, "key-dialog-title").text
        field.send_keys(key)
        browser.find_element(By.ID, "api-key-save").click()
        _wait(browser, _js("return document.querySelector('#model-select option[value]:not([value=\"\"])')"),
              message="the models did not load with the key")
        assert browser.execute_script("return localStorage.getItem('retnet.apiKey')") == key
        browser.refresh()  # asked once: the stored key goes with every later call
        _wait(browser, _js("return document.querySelector('#model-select option[value]:not([value=\"\"])')"))
        assert not browser.execute_script("return document.querySelector('dialog[open]')")
        # the units of the results go with the request: volumetric, converted by the service
        Select(browser.find_element(By.ID, "units-select")).select_by_value("cm3(STP)/cm3")
        browser.find_element(By.ID, "file-input").send_keys(str(cif_dir / "KEGZOL04_clean.cif"))
        browser.find_element(By.ID, "submit-button").click()
        _wait(browser, _image_loaded("#current-job img.grid-image"), message="no grid picture with the key")
        job_id = browser.find_element(By.CSS_SELECTOR, "#current-job .job-summary a").get_attribute("href")
        job_id = job_id.rsplit("/", 1)[-1]
        assert _get(f"{server.url}/jobs/{job_id}", key)["status"] == "succeeded"
        item = _get(f"{server.url}/jobs/{job_id}/results", key)["items"][0]
        assert item["prediction"]["unit"] == "cm3(STP)/cm3"
        value = browser.find_element(By.CSS_SELECTOR, "#current-job [data-testid=prediction-value]")
        assert value.find_element(By.CSS_SELECTOR, ".unit").text == "cm³(STP)/cm³"
        assert math.isclose(_number(value.find_element(By.CSS_SELECTOR, ".number").text), item["prediction"]["value"],
                            rel_tol=1e-3)
        assert "Prediction" in browser.find_element(By.ID, "job-list-table").text  # the key's own jobs
    finally:
        browser.execute_script("localStorage.clear()")


def _training_zip(cif_dir: Path) -> bytes:
    """The committed clean CIFs with seeded labels (mol/kg): a zip for POST /training-jobs."""
    import io
    import random
    import zipfile

    rng = random.Random(0)
    buffer = io.BytesIO()
    rows = ["name,ch4_uptake"]
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(cif_dir.glob("*_clean.cif")):
            archive.write(path, path.name)
            rows.append(f"{path.stem},{rng.uniform(0.5, 4.0):.3f}")
        archive.writestr("labels.csv", "\n".join(rows) + "\n")
    return buffer.getvalue()


def test_training_job_page_draws_its_curves_and_the_registered_model(browser, server, screenshot,  # type: ignore[no-untyped-def]
                                                                      cif_dir: Path) -> None:
    import httpx
    from selenium.webdriver.common.by import By

    epochs = 2
    r = httpx.post(f"{server.url}/training-jobs", files={"file": ("train.zip", _training_zip(cif_dir))},
                   data={"targets": "ch4_uptake", "epochs": str(epochs), "val_fraction": "0.34",
                         "name": "browser-demo", "augment": "false"}, timeout=30)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    browser.get(f"{server.url}/ui/jobs/{job_id}")
    _wait(browser, _js("return document.querySelector('#job [data-status=succeeded]') &&"
                       " document.querySelector('.training-outcome h3 a')"), timeout=90,
          message="the training job did not finish on its page")
    job = _get(f"{server.url}/jobs/{job_id}")
    status = browser.find_element(By.CSS_SELECTOR, ".training-status").text
    assert f"{epochs} of {epochs}" in status and f"{job['details']['n_train']} / {job['details']['n_val']}" in status
    points = browser.execute_script("return document.querySelectorAll("
                                    "'.training-charts svg [data-name=\"training loss\"] circle').length")
    assert 1 <= points <= epochs  # the epochs this page saw (all of them when it opened before the first)
    last = browser.find_element(By.CSS_SELECTOR, ".training-charts svg [data-name='training loss'] circle:last-of-type")
    assert f"{epochs}, " in last.get_attribute("textContent")  # the last epoch's point is on the curve
    model = browser.find_element(By.CSS_SELECTOR, ".training-outcome h3 a")
    assert model.text == job["result"]["model"]
    _wait(browser, _image_loaded(".training-outcome img[data-name='history']"), message="no history figure")
    screenshot("job-training")


RENDER_CARD = """
const [result, done] = [arguments[0], arguments[arguments.length - 1]];
import("/static/js/prediction.js").then((m) => {
  const slot = document.createElement("div");
  slot.id = "rendered";
  slot.append(m.predictionCard(result, { grid: false }));
  document.querySelector("main").prepend(slot);
  done(true);
}).catch((err) => done(String(err)));
"""


def test_an_isotherm_prediction_is_drawn_with_its_uncertainty(browser, server, screenshots_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """A curve model's ``prediction.values`` (pressure_bar, value, uncertainty) becomes a chart and a table."""
    from selenium.webdriver.common.by import By

    pressures = (0.5, 1, 2, 5, 10)
    curve = [{"pressure_bar": p, "value": 3.0 * p / (1.0 + p), "uncertainty": 0.05 + 0.02 * p} for p in pressures]
    result = {"job_id": "j", "status": "succeeded", "name": "X.cif", "error": None, "item_id": "i",
              "structure": {"name": "X", "sha256": "ab" * 32, "formula": "C2", "n_atoms": 2},
              "timings": {"parse_ms": 1.0, "voxelize_ms": 2.0, "inference_ms": 3.0, "cache_hit": False},
              "prediction": {"value": curve[-1]["value"], "unit": "mol/kg", "property": "CH4 isotherm, 298 K",
                             "model": "iso:1", "values": curve, "uncertainty": curve[-1]["uncertainty"],
                             "in_domain": False}}
    browser.get(f"{server.url}/ui/models")
    assert browser.execute_async_script(RENDER_CARD, result) is True
    chart = browser.find_element(By.CSS_SELECTOR, "#rendered figure.isotherm svg")
    assert chart.get_attribute("aria-label") == "predicted isotherm of X"
    assert "pressure (bar)" in chart.text and "uptake (mol/kg)" in chart.text
    assert len(chart.find_elements(By.CSS_SELECTOR, ".series circle")) == len(curve)
    assert len(chart.find_elements(By.CSS_SELECTOR, ".series line")) == len(curve)  # a ±σ bar per point
    rows = browser.execute_script("return [...document.querySelectorAll('#rendered figure.isotherm tbody tr')]"
                                  ".map(r => [...r.cells].map(c => c.textContent))")
    assert [_number(r[0]) for r in rows] == [p["pressure_bar"] for p in curve]
    assert all(math.isclose(_number(r[1]), p["value"], rel_tol=1e-3) for r, p in zip(rows, curve, strict=True))
    card = browser.find_element(By.ID, "rendered").text
    assert "outside the domain" in card and "± 0.25" in card
    browser.find_element(By.CSS_SELECTOR, "#rendered article.prediction").screenshot(
        str(screenshots_dir / "isotherm-card.png"))


def test_design_form_ranks_structures_for_a_target_isotherm_point(browser, server, screenshot) -> None:  # type: ignore[no-untyped-def]
    """The inverse-design form: choose the isotherm model, give a 65 bar uptake, read the ranked candidates."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    iso = next(m["ref"] for m in _get(f"{server.url}/models")["data"] if m["name"] == "retnet-ch4-isotherm")
    browser.get(f"{server.url}/")
    _wait(browser, _js(f"return [...document.querySelectorAll('#design-model option')].some(o => o.value === '{iso}')"))
    Select(browser.find_element(By.ID, "design-model")).select_by_value(iso)
    field = _wait(browser, _js("return document.getElementById('design-q-uptake_65bar')"),
                  message="no input for the 65 bar point")
    labels = browser.execute_script("return [...document.querySelectorAll('#design-quantities label')]"
                                    ".map(l => l.textContent)")
    assert any("deliverable capacity" in t for t in labels) and any("1 bar" in t for t in labels)
    field.send_keys("10")
    tolerance = browser.find_element(By.ID, "design-tolerance")
    tolerance.clear()
    tolerance.send_keys("0.5")
    top = browser.find_element(By.ID, "design-top")
    top.clear()
    top.send_keys("5")
    browser.find_element(By.ID, "design-in-domain").click()
    generate = browser.find_element(By.ID, "design-generate")
    generate.clear()
    generate.send_keys("1")
    browser.find_element(By.ID, "design-button").click()
    _wait(browser, _js("return document.querySelectorAll('#design-table tbody tr').length === 5"),
          timeout=120, message="the design candidates did not appear")
    _wait(browser, _image_loaded("#current-job figure.designed-landscape img"),
          message="no picture of the designed landscape")
    caption = browser.find_element(By.CSS_SELECTOR, "#current-job figure.designed-landscape figcaption").text
    assert "Landscape 1: uptake_65bar = " in caption and "Nearest real structures: " in caption
    assert "mol/kg at a crystal density of " in caption  # the isotherm model reads the density: designs get one
    job_id = browser.find_element(By.CSS_SELECTOR, "#current-job .job-summary a").get_attribute("href").rsplit("/")[-1]
    result = _get(f"{server.url}/jobs/{job_id}")["result"]
    assert result["target"] == {"uptake_65bar": 10.0} and result["tolerance"] == 0.5
    headers, rows = _table(browser, "#design-table")
    assert "uptake_65bar (mol/kg)" in headers and "P(within)" in headers
    assert [r[1] for r in rows] == [c["name"] for c in result["candidates"]]
    col = headers.index("uptake_65bar (mol/kg)")
    for row, c in zip(rows, result["candidates"], strict=True):
        assert math.isclose(_number(row[col].split("±")[0]), c["predicted"]["uptake_65bar"], rel_tol=1e-3)
        assert row[headers.index("Applicability")] == "in domain"
    assert "Target: uptake_65bar = 10" in browser.find_element(By.CSS_SELECTOR, "#current-job .design-summary").text
    screenshot("design")


def test_a_curve_model_screening_shows_every_point_and_sorts_by_deliverable_capacity(browser, server) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    iso = next(m["ref"] for m in _get(f"{server.url}/models")["data"] if m["name"] == "retnet-ch4-isotherm")
    files = coremof_cifs(4)
    browser.get(f"{server.url}/")
    _wait(browser, _js(f"return [...document.querySelectorAll('#model-select option')].some(o => o.value === '{iso}')"))
    Select(browser.find_element(By.ID, "model-select")).select_by_value(iso)
    browser.execute_script(DROP, [p.name for p in files], [p.read_text() for p in files])
    browser.find_element(By.ID, "submit-button").click()
    _wait(browser, _js("return document.querySelector('#current-job .job-summary [data-status=succeeded]') !== null"
                       " && document.querySelectorAll('#results-table tbody tr').length === 4"),
          message="the isotherm screening did not finish in the browser")
    headers, _ = _table(browser, "#results-table")
    for label in ("1 bar (mol/kg)", "5.8 bar (mol/kg)", "35 bar (mol/kg)", "65 bar (mol/kg)",
                  "Deliverable 65 → 5.8 bar (mol/kg)"):
        assert label in headers, headers
    column = headers.index("Deliverable 65 → 5.8 bar (mol/kg)")
    browser.find_elements(By.CSS_SELECTOR, "#results-table thead th button")[column].click()
    _, rows = _table(browser, "#results-table")
    shown = [_number(r[column]) for r in rows]
    assert shown == sorted(shown, reverse=True)  # largest capacity first
    job_id = browser.find_element(By.CSS_SELECTOR, "#current-job .job-summary a").get_attribute("href").rsplit("/")[-1]
    api = _get(f"{server.url}/jobs/{job_id}/results?sort=deliverable_65_5.8bar")
    assert [i["structure"]["name"] for i in api["items"]] == [r[headers.index("Structure")] for r in rows]
