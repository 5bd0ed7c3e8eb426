"""The MLflow UI in a real browser: Debian's headless Chromium, driven by Selenium.

After a tiny search against the test server, the experiment view that `actsweep ui` opens
must show the parent run, its child runs (trials and leaderboard rows) and, on the parent's
page, the leaderboard and plot artifacts. Screenshots are kept in the test's tmp_path.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest

from search.remote import experiment_view
from tests.deploy.conftest import Server, actsweep
from tests.deploy.services import chromium_paths

pytestmark = [pytest.mark.slow, pytest.mark.services]

WAIT_S = 120  # a bound against a hang on a loaded machine, not a speed requirement


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
    ):
        options.add_argument(arg)
    # An explicit driver path: Selenium Manager never tries to download one.
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield chrome
    finally:
        chrome.quit()


def _wait_for_text(browser: Any, text: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    xpath = f"//*[normalize-space(text())='{text}']"
    WebDriverWait(browser, WAIT_S).until(lambda b: b.find_elements(By.XPATH, xpath))
    return browser.find_element(By.XPATH, xpath)


def _close_assistant(browser: Any) -> None:
    from selenium.webdriver.common.by import By

    # MLflow 3 opens an assistant side panel; closing it leaves the runs table its width.
    for button in browser.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
        if button.is_displayed():
            button.click()


def test_ui_shows_parent_children_and_leaderboard_artifacts(
    mlflow_server: Server, served_search: dict[str, Any], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    assert served_search["proc"].returncode == 0, served_search["proc"].stderr[-2000:]
    search_id = served_search["search_id"]
    mlflow.set_tracking_uri(mlflow_server.url)
    runs = mlflow.search_runs(
        experiment_names=["tiny"], filter_string=f"tags.`actsweep.search_id` = '{search_id}'"
    )
    parent_id = runs[runs["tags.actsweep.role"] == "search"]["run_id"].iloc[0]
    children = runs[runs["tags.actsweep.role"] != "search"]["tags.mlflow.runName"].tolist()
    assert len(children) == 8

    # the view `actsweep ui tiny` opens
    browser.get(experiment_view(mlflow_server.url, mlflow_server.url, "tiny"))
    parent = _wait_for_text(browser, search_id)
    _close_assistant(browser)
    # child runs are folded under their parent: unfold them with the row's expander
    parent.find_element(By.XPATH, "./ancestor::*[@role='row']//button").click()
    for name in children:
        _wait_for_text(browser, name)
    browser.save_screenshot(str(tmp_path / "runs.png"))

    browser.get(
        f"{mlflow_server.url}/#/experiments/{runs['experiment_id'].iloc[0]}/runs/{parent_id}"
        "/artifacts?workflowType=machine_learning"
    )
    for name in (
        "leaderboard.json",
        "leaderboard.md",
        "best_loss_curves.png",
        "steps_to_target_by_depth.png",
    ):
        _wait_for_text(browser, name)
    _close_assistant(browser)
    _wait_for_text(browser, "leaderboard.md").click()
    # the markdown leaderboard renders as a table whose first data row is the winner
    first = runs[(runs["tags.actsweep.role"] == "leaderboard")].sort_values("metrics.rank").iloc[0]
    _wait_for_text(browser, str(first["params.activation"]))
    browser.save_screenshot(str(tmp_path / "artifacts.png"))
    for shot in ("runs.png", "artifacts.png"):
        data = (tmp_path / shot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_actsweep_ui_opens_the_experiment_view(
    mlflow_server: Server, served_search: dict[str, Any], tmp_path: Path
) -> None:
    opened = tmp_path / "opened.txt"
    recorder = tmp_path / "browser.py"
    recorder.write_text(f"import sys\nopen({str(opened)!r}, 'w').write(sys.argv[1])\n")
    # webbrowser runs $BROWSER with the URL in place of %s: record it instead of a window.
    browser_cmd = f"{shlex.quote(sys.executable)} {shlex.quote(str(recorder))} %s"
    proc = actsweep(
        tmp_path, "ui", "tiny", "--tracking-uri", mlflow_server.url, env={"BROWSER": browser_cmd}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    want = experiment_view(mlflow_server.url, mlflow_server.url, "tiny")
    assert want.endswith("/runs?workflowType=machine_learning")
    assert proc.stdout.strip() == f"MLflow UI at {want}"
    assert opened.read_text() == want
