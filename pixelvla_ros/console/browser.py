"""Headless Chromium for the console's tests and benchmark: the Debian browser, driven by Playwright.

Playwright's own browser download cannot work on these machines, so it drives /usr/bin/chromium (`make`
installs Debian's `chromium`). Each browser gets a profile folder of its own and no background traffic.
"""
from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-default-apps", "--mute-audio"]
if os.geteuid() == 0:
    ARGS.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox


def open_browser(playwright, user_data_dir: str | Path, width: int = 1280, height: int = 900):
    """A Chromium browser context (its own process and profile in `user_data_dir`): `.new_page()`, `.close()`."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir), executable_path=str(CHROMIUM), args=ARGS, headless=True,
        viewport={"width": width, "height": height}, device_scale_factor=1)
