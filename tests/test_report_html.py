"""The HTML report: ``--report R.html`` of enhance and edit (JSON stays JSON), what each photo's row holds, escaping,
thumbnails of every kind of file, and the page in a real browser (headless Chromium through Selenium)."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import run_cli
from PIL import Image

from spc_fast import cli, imagefiles, report_html, retouch, thumbnails
from spc_fast.batch_command import write_report
from spc_fast.kernels import dispatch

pytestmark = pytest.mark.usefixtures("torch_path")
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Images this small gain nothing from a second thread, and on a busy machine threads waiting for each other
    make the runs many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def photos():
    from spc_fast.bench.enhance_quality import load_photos

    return load_photos(("chelsea.png", "coffee.png"), 96)


@pytest.fixture(scope="module")
def html_run(photos, tmp_path_factory):
    """One enhance run over a folder (a dark coffee, a washed-out chelsea, a broken file) with an HTML report: the
    report's path, its text, and the JSON report of the same run."""
    root = tmp_path_factory.mktemp("html_run")
    folder = root / "in"
    folder.mkdir()
    imagefiles.save_image(folder / "coffee.jpg", retouch.apply(photos["coffee.png"], exposure=-1.0))
    imagefiles.save_image(folder / "chelsea.png", retouch.apply(photos["chelsea.png"], saturation=0.5))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n<b>not a png</b>")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv(dispatch.SETTING_ENV, "torch")  # as the torch_path fixture does for single tests
        assert cli.main(["enhance", "in", "-o", "out", "--report", "report.html", "--rescore"]) == 1
        assert cli.main(["enhance", "in", "-o", "out2", "--report", "report.json"]) == 1
    return (
        root / "report.html",
        (root / "report.html").read_text(encoding="utf-8"),
        json.loads((root / "report.json").read_text()),
    )


def test_html_report_holds_each_photo_and_the_failure(html_run):
    path, page, report = html_run
    assert page.startswith("<!doctype html>") and not re.search(r"(?:src|href)=\"https?:", page)
    assert "<link" not in page and "url(" not in page and "@import" not in page  # nothing fetched
    rows = re.findall(r'<article id="photo-\d+">.*?</article>', page, re.S)
    assert len(rows) == len(report["images"]) == 2
    for row, record in zip(rows, report["images"], strict=True):
        assert row.count('<img class="before" src="data:image/jpeg;base64,') == 1
        assert row.count('<img class="after" src="data:image/jpeg;base64,') == 1
        assert html.escape(record["critique"]["reasoning"], quote=False) in row  # the critic's analysis
        for suggestion in record["critique"]["suggestions"]:
            shown = "<li{}>" + html.escape(suggestion, quote=False)
            assert shown.format("") in row or shown.format(' class="skip"') in row  # not executed: marked
        assert f'href="in/{Path(record["input"]).name}"' in row  # the full-size file, relative to the page
        assert "→" in row  # the score before -> after (--rescore)
    failure = report["failures"][0]
    assert "broken.png" in failure["input"] and html.escape(failure["error"], quote=False) in page


def test_text_is_escaped_everywhere(tmp_path):
    name = tmp_path / 'a<b>"x".png'
    imagefiles.save_image(name, torch.zeros(3, 8, 8, dtype=torch.uint8))
    hostile = "<script>alert(1)</script>"
    record = {
        "input": str(name),
        "output": str(name),
        "width": 8,
        "height": 8,
        "critic_text": hostile,
        "critique": {"reasoning": hostile, "suggestions": [hostile], "score": 50.0, "errors": [hostile]},
        "parameters": {"exposure": 0.5},
        "conflicts": [hostile],
        "not_executed": [],
        "attributes_before": {"exposure": 40.0},
        "attributes_after": {"exposure": 50.0},
        "rewards": {hostile: 1.0},
    }
    report = {
        "images": [record],
        "failures": [{"input": hostile, "error": hostile}],
        "critic": hostile,
        "skipped": [{"path": hostile, "reason": hostile}],
        "not_started": [hostile],
        "interrupted": hostile,
    }
    page = report_html.render(report, tmp_path)
    assert page.count("<script>") == 1  # the page's own few lines, nothing from the report
    assert '"x"' not in re.sub(r">[^<]*<", "><", page)  # no attribute broken open by a quote
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_edit_report_shows_the_instruction_and_no_score(photos, tmp_path, capsys):
    source = tmp_path / "coffee.png"
    imagefiles.save_image(source, photos["coffee.png"])
    code, out, _ = run_cli(
        capsys,
        "edit",
        source,
        "-o",
        tmp_path / "out.png",
        "--instruction",
        "slightly increase contrast; remove haze",
        "--report",
        tmp_path / "r.htm",
    )
    assert code == 0 and "wrote" in out
    page = (tmp_path / "r.htm").read_text(encoding="utf-8")
    assert "instruction: slightly increase contrast; remove haze" in page
    assert "critic's score" not in page and "not executed</span>" in page  # remove haze needs the neural artist


def test_existing_report_is_refused_before_any_work(html_run, capsys):
    path = html_run[0]
    code, _, err = run_cli(capsys, "enhance", path.parent / "in", "-o", path.parent / "out3", "--report", path)
    assert code == 1 and "already exists" in err and not (path.parent / "out3").exists()


def test_thumbnails_of_every_kind_of_file(tmp_path):
    big = np.random.default_rng(0).integers(0, 256, (900, 1600, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=90)
    sixteen = np.linspace(0, 65535, 300 * 200 * 3).reshape(200, 300, 3).astype(np.uint16)
    imagefiles.save_image(tmp_path / "deep.png", sixteen, bit_depth=16)
    clear = np.zeros((40, 60, 4), dtype=np.uint8)  # fully transparent: laid on white
    Image.fromarray(clear, "RGBA").save(tmp_path / "clear.png")
    rotated = Image.fromarray(np.zeros((30, 80, 3), dtype=np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    rotated.save(tmp_path / "rotated.jpg", exif=exif)
    sizes = {}
    for name in ("big.jpg", "deep.png", "clear.png", "rotated.jpg"):
        with Image.open(io.BytesIO(thumbnails.thumbnail_jpeg(tmp_path / name, 200))) as thumb:
            sizes[name] = thumb.size
            if name == "clear.png":
                assert np.asarray(thumb).min() > 240
    assert sizes == {"big.jpg": (200, 113), "deep.png": (200, 133), "clear.png": (60, 40), "rotated.jpg": (30, 80)}
    assert thumbnails.data_uri(tmp_path / "missing.png") is None


def test_json_report_stays_json(html_run, tmp_path):
    report = html_run[2]
    assert report["images"] and report["failures"]
    written = write_report(tmp_path / "again.json", report)
    assert json.loads(written.read_text()) == json.loads(json.dumps(report))


def _browser():
    """Headless Chromium through Selenium, isolated from the network and from any profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="spc-fast-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options), profile


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium and chromium-driver at /usr/bin "
    "(apt-get install chromium chromium-driver; .ci/run installs them)",
)
def test_the_page_in_a_real_browser(html_run):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver, profile = _browser()
    try:
        driver.get(html_run[0].as_uri())
        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert severe == []
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) == 4
        widths = [
            driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image)
            for image in images
        ]
        assert all(width and width > 0 for width in widths), widths
        row = driver.find_element(By.ID, "photo-1")
        before, after = row.find_element(By.CSS_SELECTOR, "img.before"), row.find_element(By.CSS_SELECTOR, "img.after")
        assert before.is_displayed() and after.is_displayed()
        assert after.location["x"] > before.location["x"] + before.size["width"] // 2  # side by side
        edited = after.get_attribute("src")
        ActionChains(driver).move_to_element(after).perform()
        assert after.get_attribute("src") == before.get_attribute("src") != edited  # hover shows the input
        ActionChains(driver).move_to_element(row.find_element(By.TAG_NAME, "h2")).perform()
        assert after.get_attribute("src") == edited
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
