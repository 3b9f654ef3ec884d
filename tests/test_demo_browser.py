"""`ttt-hf demo` as a visitor uses it: the app started on loopback, driven in headless Chromium (Debian's chromium
and chromedriver through Selenium; nothing downloads a browser). Where the browser cannot start, the test fails when
TTT_HF_REQUIRE_BROWSER=1 (CI sets it) and is skipped with the reason otherwise. TTT_HF_SCREENSHOTS=DIR keeps the
screenshots (the README's: DIR=docs/images)."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ttt_hf.demo.images import sample_images
from ttt_hf.demo.in_context import draw_examples, learning_curve, make_task
from ttt_hf.demo.models import classifier, learner
from ttt_hf.zoo.registry import folder

pytestmark = pytest.mark.slow
MLP, LINATTN, DIGITS, LEARNER = ("ttt-vit-mlp-fmnist-cpu", "ttt-vit-linattn-fmnist-cpu", "ttt-vit-mlp-mnist-5k",
                                 "gpicl-transformer-mnist-5k")  # fmt: skip


def unavailable(reason: str):
    if os.environ.get("TTT_HF_REQUIRE_BROWSER") == "1":
        pytest.fail(f"the browser test cannot run: {reason}")
    pytest.skip(f"the browser test cannot run: {reason} (TTT_HF_REQUIRE_BROWSER=1 makes this a failure)")


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (pip install -e '.[dev]')")
    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        unavailable("no Chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1700"):
        options.add_argument(flag)
    try:
        session = webdriver.Chrome(service=Service(driver), options=options)
    except Exception as error:  # noqa: BLE001  (whatever stops the browser is the reason reported)
        unavailable(f"Chromium did not start: {str(error).splitlines()[0]}")
    yield session
    session.quit()


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    pytest.importorskip("gradio")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    command = [sys.executable, "-m", "ttt_hf.cli", "demo", "--models", MLP, LINATTN, DIGITS, LEARNER, "--port",
               str(port)]  # fmt: skip
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            if process.poll() is not None:
                pytest.fail(f"ttt-hf demo exited ({process.returncode}):\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"ttt-hf demo did not answer within 2 minutes:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def settled_text(session, elem_id: str, pattern: str, timeout: float = 120) -> str:
    """The text of #elem_id once it matches `pattern` and no progress indicator covers it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(driver):
        text = driver.find_element(By.ID, elem_id).text
        return text if re.search(pattern, text) and "processing" not in text and "queue" not in text else False

    return WebDriverWait(session, timeout).until(ready)


def upload(session, path):
    from selenium.webdriver.common.by import By

    session.find_element(By.CSS_SELECTOR, "#classify-image input[type=file]").send_keys(str(path))


def pick(session, elem_id: str, option: str):
    from selenium.webdriver.common.by import By

    session.find_element(By.CSS_SELECTOR, f"#{elem_id} input").click()
    session.find_element(By.CSS_SELECTOR, f"#{elem_id} li[role=option][aria-label='{option}']").click()


def screenshot(session, tmp_path, name: str) -> Path:
    target = Path(os.environ.get("TTT_HF_SCREENSHOTS") or tmp_path) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    time.sleep(1)  # let plots finish drawing
    assert session.save_screenshot(str(target)) and target.stat().st_size > 10_000
    return target


def top_label(name: str, path) -> str:
    from ttt_hf.demo.images import read_upload

    return classifier(str(folder(name)))(read_upload(path), top_k=1)[0]["label"]


def test_a_visitor_classifies_switches_models_and_watches_a_learner(browser, demo_url, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(demo_url)
    boot, digit = sample_images("fashion-mnist")[0], sample_images("mnist-5k")[2]
    # a bad file first: its message is in the page, and the page keeps working
    fake = tmp_path / "scan.png"
    fake.write_bytes(b"%PDF-1.4\n% a document, not an image\n")
    settled_text(browser, "model-a", "model A", timeout=60)
    upload(browser, fake)
    assert "scan.png is not an image: it is a PDF document" in settled_text(browser, "classify-status", "scan.png")
    # a sample image: model A's label is the pipeline's, model B beside it, the inner loop's losses below
    upload(browser, boot)
    said = settled_text(browser, "prediction-a", "says")
    assert f"{MLP} says {top_label(MLP, boot)}" in said
    assert f"{LINATTN} says {top_label(LINATTN, boot)}" in settled_text(browser, "prediction-b", "says")
    assert browser.find_element(By.ID, "classify-status").text == ""  # the last message is gone
    caption = settled_text(browser, "inner-caption", "fell by")
    assert "each of its 4 TTT layers took 1 inner gradient step" in caption and "has no inner loop" in caption
    assert browser.find_elements(By.CSS_SELECTOR, "#inner-losses img, #inner-losses svg, #inner-losses canvas")
    screenshot(browser, tmp_path, "demo-classify.png")
    # another image and another model A
    upload(browser, digit)
    settled_text(browser, "prediction-a", f"{MLP} says")
    pick(browser, "model-a", DIGITS)
    assert f"{DIGITS} says {top_label(DIGITS, digit)}" in settled_text(browser, "prediction-a", f"{DIGITS} says")
    # the in-context tab with its defaults (mnist-5k, task 1, 40 examples, 30 queries)
    browser.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Learn in context')]").click()
    browser.find_element(By.ID, "run-in-context").click()
    summary = settled_text(browser, "in-context-summary", r"accuracy on 30 queries")
    pipe = learner(str(folder(LEARNER)))
    task = make_task("mnist-5k", 1)
    curve = learning_curve(pipe, draw_examples(task, 40, 30), task)
    expected = {key: f"{100 * values[-1]:.0f} %" for key, values in curve.accuracy.items()}
    assert f"after 40 labelled examples, accuracy on 30 queries: {LEARNER} {expected['learner']}" in summary
    assert f"SGD {expected['sgd']} · 1-NN {expected['nearest_neighbour']}" in summary
    assert len(browser.find_elements(By.CSS_SELECTOR, "#support-gallery img")) >= 10
    screenshot(browser, tmp_path, "demo-in-context.png")
