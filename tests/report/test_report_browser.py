"""report.html in a real headless browser: every image loads, nothing is wider than the window, the charts draw."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

import _train_helpers as h

CHECK = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const right = e => e.getBoundingClientRect().right;
  document.body.setAttribute('data-check', JSON.stringify({
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).length,
    page_overflows: document.documentElement.scrollWidth > window.innerWidth,
    too_wide: [...document.querySelectorAll('img, svg, table')].filter(e => right(e) > window.innerWidth + 1).length,
    charts: document.querySelectorAll('svg.chart polyline').length,
    headings: [...document.querySelectorAll('h2')].map(e => e.textContent)}));
});
</script>"""


def _chromium() -> str | None:
  return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  from camjax import main

  workdir = str(tmp_path_factory.mktemp("report"))
  main.run(h.tiny(**{"training.num_steps": 4, "report.enabled": True}), workdir, "train_and_eval")
  return workdir


def test_the_report_opens_in_a_browser_with_every_image_and_chart(report, tmp_path):
  browser = _chromium()
  if browser is None:
    if os.environ.get("CI"):
      pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium)")
  page = tmp_path / "check.html"
  page.write_text(open(os.path.join(report, "report.html"), encoding="utf-8").read()
                  .replace("</body>", CHECK + "</body>"))
  out = subprocess.run(
      [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
       "--disable-background-networking", "--disable-component-update", "--disable-sync",
       f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900", "--virtual-time-budget=10000",
       "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
  found = re.search(r'data-check="([^"]*)"', out.stdout)
  assert found, out.stderr[-2000:]
  check = json.loads(found.group(1).replace("&quot;", '"'))
  assert check["images"] >= 5 and check["broken"] == 0  # grid, top-5, class units, best and worst localized
  assert not check["page_overflows"] and check["too_wide"] == 0
  assert check["charts"] >= 3 + 3  # loss, accuracy, learning rate; BoxAcc at IoU 30, 50, 70
  assert {"Training", "Localization against the threshold", "Per class"} <= set(check["headings"])


def test_the_report_data_agree_with_the_scores(report):
  results = json.load(open(os.path.join(report, "metrics.json")))
  assert "report" not in results["details"]  # the curves stay out of metrics.json and eval_results.json
  html = open(os.path.join(report, "report.html"), encoding="utf-8").read()
  best = re.findall(r"best @50: ([0-9.]+) \(([0-9.]+)\)", html)
  assert best and float(best[0][1]) == pytest.approx(results["details"]["wsol"]["MaxBoxAcc@50"], abs=0.05)
  assert float(best[0][0]) == pytest.approx(results["details"]["wsol"]["best_threshold@50"], abs=1e-9)
