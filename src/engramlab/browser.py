"""Headless Chromium for the results site: serve a folder on 127.0.0.1 and open it as a reader would.

The site's browser test (``tests/test_site.py``) and its screenshot (``scripts/site_screenshot.py``)
share these, so both see the site the same way. Chromium is Debian's (``apt-get install chromium``),
driven through Playwright for Python (the ``test`` extra); Playwright's own browser downloads are not
used. The flags keep the browser from reaching for the network (updates, sync, QUIC), so every request
it makes is one the page made.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright: Any) -> Any:
    """Debian's Chromium, headless, through a started ``sync_playwright()``."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        """No line per request: a test's output shows its failures, not the pages it loaded."""


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def screenshot(site_dir: Path, out_png: Path, width: int = 1280) -> Path:
    """A full-page screenshot of the site's index, as served over HTTP."""
    from playwright.sync_api import sync_playwright

    out_png.parent.mkdir(parents=True, exist_ok=True)
    with serve(site_dir) as base, sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(base + "index.html", wait_until="load")
            page.screenshot(path=str(out_png), full_page=True)
        finally:
            browser.close()
    return out_png
