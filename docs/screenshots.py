"""The README's screenshots, taken from a real localnet: docs/playground.png and docs/dashboard.png.

    .venv/bin/python docs/screenshots.py

Starts a three-miner localnet in a temporary folder on free ports, stores a few
records, lets the validator run a few rounds, and photographs the pages with
Debian's chromium (/usr/bin/chromium, which `make test` installs) through Playwright.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect, sync_playwright

from engram.localnet import Localnet

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
NOTES = [
    ("Octopuses have three hearts and blue, copper-based blood.", {"topic": "biology"}),
    ("The Rosetta stone carries one decree in three scripts.", {"topic": "history"}),
    ("Mitochondria turn nutrients into ATP, the cell's energy currency.", {"topic": "biology"}),
    ("Basalt columns form when thick lava cools and cracks evenly.", {"topic": "geology"}),
]
HISTORY_S = 40.0  # enough snapshots (one every 5 s) for lines in the charts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GUIDE = """# Tide pools

Tide pools fill and drain twice a day; anemones close when the water leaves.

## Visiting

Step only on bare rock, and put every stone back the way you found it.
"""


def _playground(page: Page, out: Path, home: Path) -> None:
    page.goto("/")
    guide = home / "tide-pools.md"
    guide.write_text(GUIDE)
    upload = page.get_by_role("region", name="Upload a file")
    upload.get_by_label("PDF, plain text or Markdown file").set_input_files(guide)
    upload.get_by_label("Namespace").fill("notes")
    upload.get_by_role("button", name="Upload").click()
    expect(page.locator("#file-result")).to_contain_text("stored", timeout=60_000)
    form = page.get_by_role("region", name="Store text")
    form.get_by_label("Text").fill("Tardigrades survive boiling, freezing and the vacuum of space.")
    form.get_by_label("Namespace").fill("notes")
    form.get_by_label("Key 1").fill("topic")
    form.get_by_label("Value 1").fill("biology")
    form.get_by_role("button", name="Add a field").click()
    form.get_by_label("Key 2").fill("year")
    form.get_by_label("Value 2").fill("2024")
    form.get_by_role("button", name="Store", exact=True).click()
    expect(page.locator("#text-result")).to_contain_text("Acknowledged by", timeout=60_000)
    page.screenshot(path=out / "playground.png", full_page=True)


def _dashboard(page: Page, out: Path) -> None:
    page.goto("/dashboard")
    expect(page.locator("#chart-weight polyline").first).to_be_visible(timeout=60_000)
    page.wait_for_timeout(1_000)
    page.screenshot(path=out / "dashboard.png", full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    out = parser.parse_args().out
    with tempfile.TemporaryDirectory() as home:
        net = Localnet(
            home=Path(home),
            miners=3,
            miner_ports=[_free_port() for _ in range(3)],
            gateway_port=_free_port(),
            validator_port=_free_port(),
        )
        with net.running():
            started = time.monotonic()
            with httpx.Client(base_url=net.gateway_url, timeout=60) as http:
                for text, metadata in NOTES:
                    body = {"text": text, "metadata": metadata, "namespace": "notes"}
                    http.post("/IngestSynapse", json=body).raise_for_status()
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                context = browser.new_context(
                    base_url=net.gateway_url, viewport={"width": 1280, "height": 800}
                )
                page = context.new_page()
                _playground(page, out, Path(home))
                time.sleep(max(0.0, HISTORY_S - (time.monotonic() - started)))
                _dashboard(page, out)
                browser.close()


if __name__ == "__main__":
    main()
