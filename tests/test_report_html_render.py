"""report.html as a browser shows it: headless Chromium renders the page of a scored run.

Needs Debian's ``chromium`` package (the CI set-up installs it: .ci/setup-chromium.sh); the
test skips, saying so, where it is missing.
"""

import shutil
import subprocess

import pytest

from jaxsam import cli

pytestmark = pytest.mark.slow


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no chromium on PATH: install Debian's chromium (apt-get install chromium)")


def _browser(exe: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_report_html_renders_with_its_attack_table(tiny_run, tmp_path):
    exe = _chromium()
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.path, run_dir)
    assert cli.main(["score", str(run_dir), "--bootstrap", "10"]) == 0
    url = (run_dir / "report.html").resolve().as_uri()

    shot = tmp_path / "shot.png"
    _browser(exe, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", url)
    assert shot.is_file(), "chromium wrote no screenshot"
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    ink = (pixels < 0.9).any(-1).mean()  # fraction of pixels that are not (near) white
    assert pixels.std() > 0.05 and ink > 0.02, "the rendered page is blank"

    dom = _browser(exe, tmp_path, "--dump-dom", url).stdout
    assert '<table id="attacks">' in dom
    rows = dom.split('<table id="attacks">', 1)[1].split("</table>", 1)[0]
    assert rows.count("<tr>") >= 1 + 8  # header and one row per attack
    assert "<td>lira_online</td>" in rows and "<td>calibrated_loss</td>" in rows
