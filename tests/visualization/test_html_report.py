import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import json_lines, run_script, small_experiment

CHECK_IMAGES = (
    "<script>addEventListener('load',()=>{const bad=[...document.images].filter("
    "i=>!i.complete||i.naturalWidth===0).length;document.title='images '+document.images.length+"
    "' broken '+bad;});</script>"
)


def report(workspace, *target):
    result = run_script("visualization", "html_report", *target, "--workspace", workspace)
    assert result.returncode == 0, result.stderr
    return json_lines(result.stdout)[0]["html"]


@pytest.fixture(scope="module")
def run_page(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("report") / "ws"
    os.environ["SOURCE_DATE_EPOCH"] = "1761912000"  # module fixtures run before the autouse one
    small_experiment(workspace, "experiments/results/exp", "--set", "learner.lr=0.01")
    first = report(workspace)
    second = report(workspace, "experiments/results/exp")
    return workspace, first, second


def test_a_run_page_holds_everything_inline_and_is_the_same_bytes_again(run_page):
    workspace, first, second = run_page
    text = open(first, encoding="utf-8").read()
    assert (
        open(second, "rb").read() == open(first, "rb").read()
    )  # the newest run and its folder: same page
    for heading in (
        "Run",
        "Metrics",
        "Dreams (newest)",
        "Bridge spectra (newest)",
        "Config",
        "Seeds",
        "Environment",
        "Artifacts",
    ):
        assert f"<h2>{heading}" in text, heading
    assert re.search(
        r'<tr class="set"><td class="mono">learner\.lr</td><td>0\.01</td>', text
    )  # the override
    assert "data:image/png;base64," in text and text.count("<svg") >= 2
    assert not re.search(r'(src|href)="(https?:)?//', text) and "<script" not in text
    assert "experiments/results/exp/metrics.csv" in text


def chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found and os.environ.get("CI"):
        pytest.fail("CI must have Chromium (.ci/run installs it)")
    if not found:
        pytest.skip("no Chromium on this machine")
    return found


@pytest.mark.parametrize("width", [1280, 390])
def test_the_page_renders_in_headless_chromium_with_every_image_and_no_console_error(
    run_page, tmp_path, width
):
    browser = chromium()
    page = tmp_path / "page.html"
    page.write_text(
        open(run_page[1], encoding="utf-8").read().replace("</body>", CHECK_IMAGES + "</body>")
    )
    common = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        "--hide-scrollbars",
        f"--window-size={width},2000",
        "--virtual-time-budget=3000",
    ]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, timeout=120)
    title = re.search(rb"<title>([^<]*)</title>", dom.stdout).group(1).decode()
    images = int(title.split()[1])
    assert images >= 4 and title.endswith("broken 0"), title
    assert b"CONSOLE" not in dom.stderr, dom.stderr.decode(errors="replace")[-2000:]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120
    )
    assert shot.stat().st_size > 10_000


LEAKY_IMAGE = (
    "import sys, time, numpy as np, imageio.v3 as iio\npixels = np.zeros((16, 24, 3), "
    "np.uint8)\nif time.localtime(0).tm_hour > 12: pixels[4:7, 10:14] = "
    "255\niio.imwrite(sys.argv[1] + '/plot.png', pixels)\n"
)


def test_a_verify_page_shows_the_cause_and_both_images_with_the_box(workspace, tmp_path):
    script = tmp_path / "leaky_image.py"
    script.write_text(LEAKY_IMAGE)
    verify = run_script(
        "orchestration",
        "verify",
        "--command",
        f"{sys.executable} {script} {{workspace}}",
        "--vary",
        "tz",
        "--vary",
        "hashseed",
        "--workspace",
        workspace,
        cwd=workspace,
    )
    assert verify.returncode == 1, verify.stderr
    report_path = workspace / json_lines(verify.stdout)[0]["report"]
    text = open(report(workspace, report_path), encoding="utf-8").read()
    assert "<h2>Causes" in text and ">tz<" in text and "rows 4-6, columns 10-13" in text
    assert (
        "<b>changed:</b> TZ Etc/GMT+12 -&gt; Etc/GMT-14" in text
        and "<b>fix:</b> format times in UTC" in text
    )
    assert text.count('alt="first run"') == 1 and text.count('alt="second run"') == 1
    assert 'style="top:25.000%;left:41.667%;height:18.750%;width:16.667%"' in text


SCRIPT_WITH_PLOTS = """
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
losses = [1.0 / epoch for epoch in range(1, 6)]
with open("history.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["epoch", "val_loss", "val_accuracy"])
    writer.writerows((epoch, loss, 1 - loss / 2) for epoch, loss in enumerate(losses, start=1))
plt.plot(losses)
plt.savefig("loss.png")
plt.savefig("loss.svg")
"""


def test_an_external_scripts_page_plots_its_own_metrics_and_shows_its_images_in_chromium(
    workspace, tmp_path
):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT_WITH_PLOTS)
    config = tmp_path / "ext.toml"
    config.write_text(
        f'[experiment]\nkind = "external"\n[external]\ncommand = ["{sys.executable}", "{script}"]\n'
    )
    ran = run_script(
        "orchestration",
        "run_experiment",
        "--config",
        config,
        "--logdir",
        workspace / "experiments/results/ext",
        "--workspace",
        workspace,
        cwd=workspace,
    )
    assert ran.returncode == 0, ran.stderr
    text = open(report(workspace, "experiments/results/ext"), encoding="utf-8").read()
    assert "<h2>Metrics (history.csv)" in text and "<h2>Images the run wrote" in text
    assert re.search(r"<td>val_loss</td><td>0\.2</td><td>0\.2</td><td>min</td><td>5\.0</td>", text)
    assert "data:image/svg+xml;base64," in text and "<h2>The command" in text
    browser = chromium()
    page = tmp_path / "page.html"
    page.write_text(text.replace("</body>", CHECK_IMAGES + "</body>"))
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=3000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    title = re.search(rb"<title>([^<]*)</title>", dom.stdout).group(1).decode()
    assert int(title.split()[1]) >= 2 and title.endswith("broken 0"), title
