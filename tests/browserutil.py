"""Helpers for the browser tests: find Chromium, open a watched page, keep a screenshot.

Debian's `chromium`, driven by Playwright. RESTYLE_SKIP_BROWSER=1 skips the browser tests
explicitly; otherwise a missing chromium is a failure, not a skip. conftest's `browser`
fixture launches it once per module.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "web"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
# bypass_csp: Playwright evaluates wait_for_function strings, which the app's CSP (rightly) forbids.
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def chromium_path() -> str:
    if os.environ.get("RESTYLE_SKIP_BROWSER") == "1":
        pytest.skip("RESTYLE_SKIP_BROWSER=1")
    path = os.environ.get("RESTYLE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("chromium is not installed: `make browsers` (apt-get install chromium), "
                    "or set RESTYLE_SKIP_BROWSER=1 to skip the browser tests on purpose")
    return path


def watched_page(browser, viewport, **context_options):
    """A new page and the list its JavaScript errors, console errors and HTTP errors >= 400 land in."""
    context = browser.new_context(viewport=viewport, bypass_csp=True, **context_options)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("response", lambda r: r.status >= 400 and errors.append(f"{r.status} {r.url}"))
    return context, page, errors


def shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
