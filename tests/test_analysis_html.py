"""report.html in a real browser: headless Chromium renders it, takes a screenshot, and every
image on the page has loaded (naturalWidth > 0); in a 1300-pixel-wide window the findings table fits,
its verdict column on screen. Needs Debian's ``chromium`` (``make test`` installs it)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from analysis import report
from tests.analysis_data import paper_like_sweep

pytestmark = pytest.mark.slow

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Appended to a copy of the page: after load, mark each image with whether it decoded.
CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) {
    img.setAttribute("data-loaded", img.complete && img.naturalWidth > 0 ? "yes" : "no");
  }
  document.body.setAttribute("data-checked", String(document.images.length));
});
</script>"""


# Appended to a copy of the page: after load, write where the findings table and its verdict cells end,
# and how wide the window is, into the DOM for --dump-dom to carry out.
MEASURE_SCRIPT = """<script>
window.addEventListener("load", () => {
  const table = document.querySelector("table.tbl-findings");
  const verdicts = [...table.querySelectorAll("td.col-verdict")];
  const box = table.closest(".scroll");
  const b = document.body;
  b.setAttribute("data-viewport", String(document.documentElement.clientWidth));
  b.setAttribute("data-table-right", String(Math.ceil(table.getBoundingClientRect().right)));
  b.setAttribute("data-verdicts", String(verdicts.length));
  b.setAttribute("data-verdict-right", String(Math.ceil(Math.max(...verdicts.map((c) => c.getBoundingClientRect().right)))));
  b.setAttribute("data-scroll-overflow", String(box.scrollWidth - box.clientWidth));
});
</script>"""
WIDTH = 1300  # a laptop browser window


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("No Chromium found: install it (Debian: `apt-get install chromium`; `make test` does this).")


def run_browser(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    """report.html and its files, from a sweep with SimPO over gamma, w/o LN, DPO and failed trials."""
    root = tmp_path_factory.mktemp("report")
    sweep = paper_like_sweep(root / "results")
    assert report.main([str(sweep), "--out", str(root / "reports")]) == 0
    return root / "reports" / "paper"


def test_report_html_renders_with_every_image(tmp_path, report_dir):
    out = report_dir
    page = (out / "report.html").read_text()
    n_images = page.count("<img ")
    assert n_images >= 6

    # The page itself, as a user opens it: a screenshot of the whole report.
    shot = tmp_path / "report.png"
    proc = run_browser(
        tmp_path, f"--screenshot={shot}", "--window-size=1400,4000", (out / "report.html").as_uri()
    )
    assert shot.is_file(), proc.stderr[-2000:]
    assert png_size(shot) == (1400, 4000)
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one

    # A copy next to it (same relative links) with the image check appended, its DOM dumped after load.
    checked = out / "report-check.html"
    checked.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    proc = run_browser(tmp_path, "--dump-dom", checked.as_uri())
    dom = proc.stdout
    assert f'data-checked="{n_images}"' in dom, proc.stderr[-2000:]
    loaded = re.findall(r'<img [^>]*data-loaded="(yes|no)"', dom)
    assert loaded == ["yes"] * n_images
    for title in (
        "Main comparison",
        "Ablation",
        "Efficiency",
        "Trials that did not finish",
        "injected fault",
    ):
        assert title in dom


def test_findings_verdicts_visible_at_1300px(tmp_path, report_dir):
    page = (report_dir / "report.html").read_text()
    assert 'class="tbl-findings"' in page
    measured = report_dir / "report-measure.html"
    measured.write_text(page.replace("</body>", MEASURE_SCRIPT + "</body>"))
    proc = run_browser(tmp_path, f"--window-size={WIDTH},2000", "--dump-dom", measured.as_uri())
    found = dict(
        re.findall(
            r'data-(viewport|table-right|verdicts|verdict-right|scroll-overflow)="(-?\d+)"', proc.stdout
        )
    )
    assert len(found) == 5, proc.stderr[-2000:]
    viewport = int(found["viewport"])
    assert viewport == WIDTH  # no scrollbar: the page itself does not scroll sideways
    assert int(found["verdicts"]) >= 10  # a verdict per claim
    # The whole table, verdict column included, is on screen; nothing is hidden behind a sideways scroll.
    assert int(found["table-right"]) <= viewport, found
    assert int(found["verdict-right"]) <= viewport, found
    assert int(found["scroll-overflow"]) <= 0, found
