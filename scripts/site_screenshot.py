"""A screenshot of the results site's index, for the docs: ``python scripts/site_screenshot.py SITE_DIR OUT_PNG``.

E.g. ``python scripts/site_screenshot.py docs/site docs/images/site-index.png``. Needs Debian's
Chromium (``apt-get install chromium``) and Playwright for Python (the ``test`` extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engramlab.browser import screenshot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site_dir", type=Path, help="a folder written by `engram report --html`")
    parser.add_argument("out_png", type=Path, help="where to write the PNG")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in pixels (default 1280)")
    args = parser.parse_args()
    print(screenshot(args.site_dir, args.out_png, args.width))


if __name__ == "__main__":
    main()
