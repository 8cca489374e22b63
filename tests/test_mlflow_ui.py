"""What a person sees in the MLflow UI, read in a real browser: a real ``mlflow server`` on loopback, a
tiny AP2 sweep tracked to it, and headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium) opening the experiment in the classic view, a child run's metrics and plots, and
the sweep's summary page with its table and links; the page ``maelstrom runs list --sweep ID --html``
writes is read the same way. No screenshots are kept."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
#: Flags for a browser that talks to nothing but the page it is given.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)
CLASSIC = "workflowType=machine_learning"
#: Training steps per epoch of the sweep's jobs (two epochs each).
STEPS = 8


@pytest.fixture
def browser() -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(driver, url: str) -> None:
    """Open ``url`` as a new page load (as a person following a link does): from one MLflow page to
    another by its hash alone the UI keeps the previous run's artefact state."""
    driver.get("about:blank")
    driver.get(url)


def _text(driver) -> str:
    return driver.find_element("tag name", "body").text


def _wait(driver, condition, what: str, timeout: float = 60):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)
    except TimeoutException:
        pytest.fail(f"the page never showed {what}; it shows:\n{_text(driver)[:3000]}")


def _wait_text(driver, *texts: str) -> str:
    _wait(driver, lambda d: all(t in _text(d) for t in texts), " and ".join(map(repr, texts)))
    return _text(driver)


def _images_shown(driver) -> int:
    """Images the browser has decoded (a broken or missing image has no natural width)."""
    return driver.execute_script(
        "return [...document.images].filter(i => i.complete && i.naturalWidth > 100).length"
    )


def _open_artifact(driver, folder: str | None, name: str) -> None:
    """Click ``folder`` open in the artefact tree (unless it is open or None) and ``name`` in it."""

    def item(text: str):
        found = driver.find_elements("xpath", f"//*[normalize-space(text())='{text}']")
        shown = [e for e in found if e.is_displayed()]
        return shown[0] if shown else None

    if folder is not None and item(name) is None:
        _wait(driver, lambda d: item(folder), f"the folder {folder}").click()
    _wait(driver, lambda d: item(name), f"the file {name}").click()


def _jobs_table(driver) -> tuple[list[str], list[list[str]], list[str]]:
    """The sweep page's jobs table as a reader sees it: header, rows of cell text, link targets."""
    table = driver.find_element("id", "jobs")
    head = [th.text for th in table.find_elements("css selector", "thead th")]
    rows = [
        [td.text.replace("\n", " ") for td in tr.find_elements("tag name", "td")]
        for tr in table.find_elements("css selector", "tbody tr")
    ]
    links = [a.get_attribute("href") for a in table.find_elements("css selector", "a")]
    return head, rows, links


def test_sweep_in_the_mlflow_ui(run_cli, cli_env, tmp_path, mlflow_server, browser) -> None:
    import mlflow

    result = run_cli(
        [
            "--multirun",
            "app=ap2",
            "train.epochs=2",
            "model.layers=1",
            f"train.steps_per_epoch={STEPS}",
            "model.learning_rate=0.01,0.001",
            f"tracking.uri={mlflow_server}",
        ],
        cwd=tmp_path,
        env=cli_env,
        check=True,
        timeout=300,
    )
    sweep_id = re.search(r"(sweep-ap2-\d{8}-\d{6}-[0-9a-f]{6})", result.stderr + result.stdout).group(1)

    # the oracle: what the MLflow client reads back from the server
    client = mlflow.MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("ap2")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted(
        (r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
        key=lambda r: int(r.data.tags["maelstrom.sweep_index"]),
    )
    assert [c.info.run_name for c in children] == [
        "ap2 model.learning_rate=0.01",
        "ap2 model.learning_rate=0.001",
    ]
    assert parent.info.run_name == "ap2 sweep: model.learning_rate"
    assert parent.data.params["sweep.model.learning_rate"] == "0.01, 0.001"
    best = min(children, key=lambda c: c.data.metrics["final.val_loss"])
    assert parent.data.tags["maelstrom.sweep.best_mlflow_run"] == best.info.run_id
    assert parent.data.metrics["best.val_loss"] == pytest.approx(best.data.metrics["final.val_loss"])
    ui = f"{mlflow_server}/#/experiments/{experiment.experiment_id}"

    # the experiment: the classic runs table (not the GenAI overview), the sweep's parent run and
    # the dataset its children trained on
    _open(browser, f"{ui}?{CLASSIC}")
    text = _wait_text(browser, "Runs", parent.info.run_name)
    assert "Model training" in text and "Evaluation runs" not in text and "Token Usage" not in text
    assert "2 matching runs" not in text  # the children are nested under their parent
    assert re.search(r"\b3 matching runs\b", text), text[:2000]

    # a child run: its metrics and params (the phase percentiles are in a table, not among them)
    child = children[0]
    _open(browser, f"{ui}/runs/{child.info.run_id}?{CLASSIC}")
    text = _wait_text(browser, child.info.run_name, f"Metrics ({len(child.data.metrics)})")
    assert "val_loss" in text and "phase.forward.total_s" in text and "final.val_loss" in text
    assert "p50_ms" not in text and ".share" not in text
    assert f"Parameters ({len(child.data.params)})" in text and len(child.data.params) < 60
    assert "tweets (sample, tiny)" in text  # the dataset input

    # ... as charts: a person searches for the validation loss
    _open(browser, f"{ui}/runs/{child.info.run_id}/model-metrics?{CLASSIC}")
    search = _wait(
        browser,
        lambda d: d.find_elements("css selector", "input[placeholder='Search metric charts']"),
        "the chart search",
    )[0]
    search.send_keys("val_loss")
    _wait_text(browser, "Model metrics\n(2)", "final.val_loss", f"{child.info.run_name} (val_loss)")

    # its plots and its phase table, opened in the artefact tree as a person does
    _open(browser, f"{ui}/runs/{child.info.run_id}/artifacts?{CLASSIC}")
    _open_artifact(browser, "plots", "training_curves.png")
    _wait(browser, lambda d: _images_shown(d) >= 1, "the training curves")
    _open_artifact(browser, "plots", "phase_times.png")
    _wait(browser, lambda d: _images_shown(d) >= 1, "the phase times")
    _open_artifact(browser, "timing", "phases.csv")
    text = _wait_text(browser, "timing/phases.csv", "epoch", "phase", "calls")
    # a row per epoch and phase (counted from 1), then the whole run's
    assert re.search(rf"^1 io {STEPS} ", text, re.M) and re.search(rf"^2 step {STEPS} ", text, re.M), text
    assert re.search(rf"^all forward {2 * STEPS} ", text, re.M), text

    # the sweep's page, inside the MLflow UI's artefact view
    _open(browser, f"{ui}/runs/{parent.info.run_id}/artifacts?{CLASSIC}")
    _open_artifact(browser, None, "sweep_summary.html")
    frame = _wait(browser, lambda d: d.find_elements("css selector", "iframe"), "the sweep page's frame")[0]
    browser.switch_to.frame(frame)
    _wait(browser, lambda d: d.find_elements("id", "jobs"), "the jobs table")
    head, rows, links = _jobs_table(browser)
    assert head[:4] == ["#", "run", "state", "model.learning_rate"] and "val_loss" in head
    loss = head.index("val_loss")
    expected = [
        ["0", children[0].data.tags["maelstrom.run_id"], "succeeded", "0.01"],
        ["1", children[1].data.tags["maelstrom.run_id"], "succeeded", "0.001"],
    ]
    assert [r[:4] for r in rows] == expected
    for row, c in zip(rows, children, strict=True):
        assert float(row[loss]) == pytest.approx(c.data.metrics["final.val_loss"], rel=1e-3)
    assert links == [f"{ui}/runs/{c.info.run_id}?{CLASSIC}" for c in children]
    best_line = browser.find_element("id", "best").text
    assert best.info.run_name.removeprefix("ap2 ") in best_line and "val_loss" in best_line
    assert _images_shown(browser) == 2  # the bars per job and the curves per epoch
    in_mlflow = (head, rows)
    browser.switch_to.default_content()

    # a link of the page leads to the child run
    _open(browser, links[1])
    _wait_text(browser, children[1].info.run_name, "Overview")

    # the same page, written by `maelstrom runs list --sweep ID --html FILE`
    page = tmp_path / "sweep.html"
    listed = run_cli(
        ["maelstrom", "runs", "list", "--sweep", sweep_id, "--html", page], env=cli_env, check=True
    )
    assert str(page) in listed.stdout
    _open(browser, page.as_uri())
    _wait(browser, lambda d: d.find_elements("id", "jobs"), "the jobs table")
    head, rows, links = _jobs_table(browser)
    assert (head, rows) == in_mlflow
    assert links == [f"{ui}/runs/{c.info.run_id}?{CLASSIC}" for c in children]
    assert _images_shown(browser) == 2
