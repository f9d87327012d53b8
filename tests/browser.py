"""Headless Chromium for tests that check what a person sees: Debian's ``chromium`` driven through selenium.

CI's ``.ci/run`` installs ``chromium`` and ``chromium-driver`` with apt, so these tests always run there. Where
either is missing, ``require_chromium()`` skips the calling test with a reason that pytest's ``-ra`` summary
prints, so a machine without a browser says so instead of passing silently.

Example:
    >>> def test_report_renders(tmp_path):                  # doctest: +SKIP
    ...     with chromium_driver() as driver:
    ...         driver.get((tmp_path / "index.html").as_uri())
    ...         driver.save_screenshot(str(tmp_path / "index.png"))
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, NamedTuple

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

__all__ = ["CHROMIUM_ENV", "SKIP_REASON", "Chromium", "chromium_driver", "find_chromium", "require_chromium"]

CHROMIUM_ENV = "FACESYNTH_CHROMIUM"      # a chromium binary to use instead of the one on PATH (a missing path = none)
SKIP_REASON = "chromium not installed: apt-get install chromium chromium-driver (CI's .ci/run does)"


class Chromium(NamedTuple):
    """The browser binary and the chromedriver of the same build."""

    browser: Path
    driver: Path


def find_chromium() -> Chromium | None:
    """Debian's chromium and chromedriver, or None if either is missing.

    ``$FACESYNTH_CHROMIUM`` names another browser binary; a path that does not exist counts as missing, which is
    how to see the skip on a machine that has chromium.
    """
    browser = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if not browser or not Path(browser).is_file() or not driver:
        return None
    return Chromium(Path(browser), Path(driver))


def require_chromium() -> Chromium:
    """``find_chromium()``, or skip the calling test with ``SKIP_REASON`` (shown in the ``-ra`` summary)."""
    found = find_chromium()
    if found is None:
        pytest.skip(SKIP_REASON)
    pytest.importorskip("selenium", reason="selenium not installed: pip install -e '.[dev]'")
    return found


@contextmanager
def chromium_driver(width: int = 1400, height: int = 1000) -> Iterator[WebDriver]:
    """A headless selenium Chrome driver on Debian's chromium, a ``width`` x ``height`` window; quit on exit.

    Skips the calling test (visibly) when chromium or chromedriver is missing. The driver is given both
    paths, so selenium never looks for (or downloads) a browser of its own.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = str(found.browser)
    # --no-sandbox: CI containers run as root; --disable-dev-shm-usage: their /dev/shm is small
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(found.driver)))
    try:
        yield driver
    finally:
        driver.quit()
