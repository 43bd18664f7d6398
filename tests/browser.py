"""A real browser for the tests: headless Chromium (Debian's `chromium` package).

`.ci/run` installs it; elsewhere a test that needs it is skipped with the reason, unless
SALIENCY_FLOW_REQUIRE_CHROMIUM=1 (CI sets it) makes a missing browser a failure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import unavailable

REQUIRE_CHROMIUM_ENV = "SALIENCY_FLOW_REQUIRE_CHROMIUM"

# Put first in <head>: counts load errors (an image that does not decode fires `error`) and,
# once the page has loaded, writes what it found onto <body> for the DOM dump to show.
PROBE = """<script>
window.__errors = 0;
window.addEventListener("error", () => { window.__errors += 1; }, true);
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const body = document.body;
  body.setAttribute("data-images", images.length);
  body.setAttribute("data-decoded",
                    images.filter(i => i.complete && i.naturalWidth > 0).length);
  body.setAttribute("data-errors", window.__errors);
  body.setAttribute("data-external", Array.from(document.querySelectorAll("[src]"))
      .filter(e => /^(https?:)?\\/\\//.test(e.getAttribute("src"))).length);
});
</script>"""


def chromium() -> str:
    """The Chromium executable, or skip (fail where it is required) with the reason."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "Chromium is not installed (Debian: apt-get install chromium)"
    unavailable(reason, REQUIRE_CHROMIUM_ENV)


def _headless(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--disable-extensions", "--virtual-time-budget=10000", *args],
        capture_output=True, text=True, timeout=120)


@dataclass
class Rendered:
    """What Chromium made of a page: its counts once loaded, its DOM and a screenshot."""

    images: int
    decoded: int
    errors: int
    external: int
    dom: str
    screenshot: Path


def render_page(page: Path, out_dir: Path, width: int = 1280, height: int = 3000) -> Rendered:
    """Load `page` (an HTML file) in headless Chromium: DOM dump with the probe, screenshot of
    the page as it is."""
    probed = out_dir / f"probed-{page.name}"
    text = page.read_text(encoding="utf-8")
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    dumped = _headless("--dump-dom", probed.as_uri())
    counts = {name: re.search(rf'data-{name}="(\d+)"', dumped.stdout)
              for name in ("images", "decoded", "errors", "external")}
    assert all(counts.values()), f"the page did not finish loading: {dumped.stderr[-2000:]}"
    screenshot = out_dir / f"{page.stem}.png"
    shot = _headless(f"--window-size={width},{height}", f"--screenshot={screenshot}",
                     page.as_uri())
    assert screenshot.exists(), shot.stderr[-2000:]
    return Rendered(*(int(counts[n].group(1)) for n in ("images", "decoded", "errors",
                                                        "external")),
                    dumped.stdout, screenshot)


def render_url(url: str, screenshot: Path, *, width: int = 1600, height: int = 1000,
               budget_ms: int = 15000) -> str:
    """Load `url` (a web app's page) once in headless Chromium: a screenshot of the window into
    `screenshot`, and the page's DOM, returned, both once `budget_ms` of virtual time has passed
    (the later `--virtual-time-budget` is the one Chromium keeps)."""
    screenshot.unlink(missing_ok=True)
    shot = _headless(f"--virtual-time-budget={budget_ms}", f"--window-size={width},{height}",
                     f"--screenshot={screenshot}", "--dump-dom", url)
    assert screenshot.exists(), f"no screenshot of {url}: {shot.stderr[-2000:]}"
    return shot.stdout
