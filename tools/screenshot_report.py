"""Screenshot an audit report in a real browser (headless Chromium from Debian's packages).

    python tools/screenshot_report.py audit/report.html report.png [--width 1280 --height 2400]
    python tools/screenshot_report.py audit/report.html docs/audit_report.jpg --jpeg 70 --scale 0.5

``--jpeg Q`` writes a JPEG of quality Q (through OpenCV), ``--scale`` shrinks it first: a small
picture for the README. Chromium runs with ``--no-sandbox`` (containers run as root) and no
network access is needed: the report is self-contained.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2


def screenshot(html: Path, png: Path, width: int, height: int) -> None:
    """Chromium's headless screenshot of ``html`` into ``png``."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        sys.exit("no chromium: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={png}",
               html.resolve().as_uri()]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if not png.is_file():
        sys.exit(f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2400)
    ap.add_argument("--jpeg", type=int, default=0, help="write a JPEG of this quality")
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "shot.png"
        screenshot(args.html, png, args.width, args.height)
        img = cv2.imread(str(png))
        if args.scale != 1.0:
            img = cv2.resize(img, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_AREA)
        params = [cv2.IMWRITE_JPEG_QUALITY, args.jpeg] if args.jpeg else []
        if not cv2.imwrite(str(args.out), img, params):
            sys.exit(f"cannot write {args.out}")
    print(f"{args.out}: {img.shape[1]}x{img.shape[0]}, {args.out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
