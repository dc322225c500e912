"""The gateway's pages in headless Chromium against a running localnet (real model, real
processes): store and find a text, upload a PDF and audit one of its passages on its three
replicas, watch the dashboard follow a validator round, tell identical miners' lines apart and
show a SIGKILLed miner's last measurements as stale, and the error and phone layouts.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from engram.chain.local import LocalChain
from engram.localnet import Localnet
from tests.pdf import make_pdf

pytestmark = pytest.mark.slow

ROUND_TIMEOUT_MS = 45_000  # the localnet's validator sets weights every 6 s once it has scores


@pytest.fixture(scope="module")
def chain(localnet: Localnet) -> Iterator[LocalChain]:
    c = LocalChain(localnet.home / "chain.sqlite")
    yield c
    c.close()


def test_dashboard_lists_every_neuron_and_follows_a_weights_round(
    page: Page, localnet: Localnet, chain: LocalChain
) -> None:
    page.goto("/dashboard")
    neurons = chain.metagraph(localnet.netuid).neurons
    rows = page.locator("#neurons-table tbody tr")
    expect(rows).to_have_count(len(neurons))
    assert len(neurons) == 4
    for n in neurons:
        row = page.locator(f'#neurons-table tr[data-uid="{n.uid}"]')
        expect(row.locator(".key")).to_have_attribute("title", n.hotkey)
        expect(row).to_contain_text("validator" if n.validator_permit else "serving")

    # A weights round moves the block the weights were set at; the page then shows the
    # weights the validator reports for that block.
    block = page.locator("#tile-weights-block")
    weights = page.locator('#neurons-table tr[data-role="miner"] td[data-field="weight"]')
    first = block.inner_text()
    expect(block).not_to_have_text(first, timeout=ROUND_TIMEOUT_MS)
    deadline = time.monotonic() + 20
    while True:
        shown_block, shown = block.inner_text(), weights.all_inner_texts()
        scores = httpx.get(localnet.validator_url + "/api/scores", timeout=5).json()
        if str(scores["rounds"]["weights"]["block"]) == shown_block:
            break
        assert time.monotonic() < deadline, "the dashboard never caught up with the validator"
        page.wait_for_timeout(500)
    miners = sorted((n for n in neurons if not n.validator_permit), key=lambda n: n.uid)
    assert shown == [f"{scores['miners'][str(n.uid)]['weight']:.4f}" for n in miners]
    # One end marker per miner (a line that breaks draws more than one polyline).
    expect(page.locator("#chart-weight .marker")).to_have_count(3, timeout=ROUND_TIMEOUT_MS)
    expect(page.locator("#chart-score .marker")).to_have_count(3)
    expect(page.locator("#health-lost")).to_have_text(re.compile(r"^\d+ lost$"))


def test_playground_stores_a_text_that_search_finds(page: Page) -> None:
    page.goto("/")
    form = page.get_by_role("region", name="Store text")
    form.get_by_label("Text").fill("Octopuses have three hearts and blue blood.")
    form.get_by_label("Namespace").fill("browser-text")
    form.get_by_label("Key 1").fill("topic")
    form.get_by_label("Value 1").fill("biology")
    form.get_by_role("button", name="Add a field").click()
    form.get_by_label("Key 2").fill("year")
    form.get_by_label("Value 2").fill("2024")
    form.get_by_role("button", name="Store", exact=True).click()
    result = page.locator("#text-result")
    expect(result).to_contain_text("Acknowledged by 3 replicas", timeout=30_000)
    cid = result.locator("a.cid").inner_text()
    assert re.fullmatch(r"v1::[0-9a-f]{64}", cid)
    expect(result.locator(".replicas li")).to_have_count(3)

    page.get_by_role("navigation", name="Pages").get_by_role("link", name="Browse").click()
    page.get_by_label("Query").fill("how many hearts does an octopus have")
    page.get_by_label("Namespace", exact=True).first.fill("browser-text")
    page.get_by_label("Metadata filter (JSON, optional)").fill('{"year": {"$gte": 2020}}')
    page.get_by_role("button", name="Search").click()
    first = page.locator("#search-results li").first
    expect(first).to_contain_text("Octopuses have three hearts", timeout=30_000)
    expect(first.locator("a.cid")).to_have_text(cid)
    expect(first).to_contain_text('topic: "biology"')
    expect(first).to_contain_text("year: 2024")

    page.get_by_label("Metadata filter (JSON, optional)").fill('{"year": {"$lt": 2020}}')
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#search-status")).to_contain_text("Nothing found", timeout=30_000)


def test_uploaded_pdf_is_found_by_a_phrase_and_audited_on_three_replicas(
    page: Page, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pdf = tmp_path_factory.mktemp("upload") / "field-notes.pdf"
    pdf.write_bytes(
        make_pdf(
            [
                "Field notes, day one.\nWe counted sea otters along the northern kelp forest.",
                "Day two.\nThe lighthouse keeper repaints the lantern room every spring.",
            ]
        )
    )
    page.goto("/")
    upload = page.get_by_role("region", name="Upload a file")
    upload.get_by_label("PDF, plain text or Markdown file").set_input_files(pdf)
    upload.get_by_label("Namespace").fill("browser-pdf")
    upload.get_by_role("button", name="Upload").click()
    report = page.locator("#file-result")
    expect(report).to_contain_text("2 of 2 passages from 2 pages stored", timeout=30_000)
    expect(report.locator("tbody tr")).to_have_count(2)
    expect(report.locator("tbody tr").nth(1)).to_contain_text("page 2")

    page.goto("/browse?ns=browser-pdf")
    page.get_by_label("Query").fill("who paints the lantern room")
    page.get_by_role("button", name="Search").click()
    first = page.locator("#search-results li").first
    expect(first).to_contain_text("lighthouse keeper repaints", timeout=30_000)
    expect(first).to_contain_text("page: 2")
    expect(first).to_contain_text('source: "field-notes.pdf"')
    expect(page.locator("#records-table tbody tr")).to_have_count(2)

    first.locator("a.cid").click()
    expect(page).to_have_url(re.compile(r"/cid/v1::[0-9a-f]{64}$"))
    expect(page.locator("#audit-summary")).to_contain_text(
        "3 of 3 replicas hold a copy", timeout=30_000
    )
    expect(page.locator('#audit-table tr[data-verdict="verified"]')).to_have_count(3)
    expect(page.locator("#rec-text")).to_contain_text("lighthouse keeper repaints")
    expect(page.locator("#rec-metadata")).to_contain_text('"page": 2')
    page.get_by_role("button", name="Copy CID").click()
    expect(page.locator("#copy-status")).to_have_text("Copied to the clipboard.")


def test_a_bad_cid_gets_a_friendly_message(page: Page) -> None:
    response = page.goto("/cid/not-a-cid")
    assert response is not None and response.status == 400
    expect(page.get_by_role("alert")).to_contain_text("is not a CID")
    expect(page.locator("#audit-table")).to_be_hidden()


@pytest.mark.parametrize("path", ["/", "/browse", "/dashboard"])
def test_pages_fit_a_phone_and_work_from_the_keyboard(page: Page, path: str) -> None:
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(path)
    page.wait_for_load_state("networkidle")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{path} scrolls sideways by {overflow}px on a phone"
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.closest('main') !== null")
    assert focused, "Tab after the skip link should land inside the page content"
    unlabelled = page.evaluate(
        """[...document.querySelectorAll('input, textarea, select')]
           .filter(e => !e.labels || e.labels.length === 0).map(e => e.id)"""
    )
    assert unlabelled == []


def _series_styles(page: Page, chart: str) -> dict[str, tuple[str, str, tuple[float, float]]]:
    """Per uid on a chart: the line's colour and dash pattern and where its end marker sits."""
    found = page.evaluate(
        """(chart) => [...document.querySelectorAll(`#${chart} .marker`)].map((m) => {
             const line = document.querySelector(`#${chart} polyline[data-uid="${m.dataset.uid}"]`);
             const box = m.getBBox();
             return [m.dataset.uid, line ? line.getAttribute("stroke") : null,
                     line ? line.getAttribute("stroke-dasharray") : null,
                     [box.x + box.width / 2, box.y + box.height / 2]];
           })""",
        chart,
    )
    return {uid: (color, dash, tuple(centre)) for uid, color, dash, centre in found}


def test_identical_miners_lines_stay_apart_and_hover_names_each(page: Page) -> None:
    """The localnet's three miners are identical, so their scores coincide: each line still
    has its own colour, dash and end marker, drawn a few pixels from the others."""
    page.goto("/dashboard")
    expect(page.locator("#chart-score .marker")).to_have_count(3, timeout=ROUND_TIMEOUT_MS)
    deadline = time.monotonic() + ROUND_TIMEOUT_MS / 1000
    while True:
        styles = _series_styles(page, "chart-score")
        if all(color is not None for color, _, _ in styles.values()):
            break
        assert time.monotonic() < deadline, f"not every miner has a score line: {styles}"
        page.wait_for_timeout(500)
    assert len(styles) == 3
    assert len({(color, dash) for color, dash, _ in styles.values()}) == 3, styles
    ends = [centre for _, _, centre in styles.values()]
    for i, a in enumerate(ends):
        for b in ends[i + 1 :]:
            assert max(abs(a[0] - b[0]), abs(a[1] - b[1])) >= 2, f"end markers overlap: {styles}"
    legend = page.locator("#legend-score li")
    expect(legend).to_have_count(3)
    for uid in styles:
        expect(page.locator(f'#legend-score li[data-uid="{uid}"] svg line')).to_have_count(1)

    chart = page.locator("#chart-score")
    box = chart.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] - 20, box["y"] + box["height"] / 2)
    tip = page.locator("#tip-score")
    expect(tip).to_be_visible()
    for uid in styles:
        expect(tip).to_contain_text(f"uid {uid}: ")
    expect(chart.locator(".guide")).to_have_count(1)
    page.mouse.move(box["x"] - 30, box["y"] - 30)
    expect(tip).to_be_hidden()


def test_a_killed_miner_shows_its_last_measurements_as_stale(
    page: Page, localnet: Localnet, chain: LocalChain
) -> None:
    """SIGKILL a miner: once its axon expires the dashboard says it is down and when it was
    last measured, greys its recall, latency, proof rate and score, and breaks its score line;
    restarted, it is measured again and nothing is stale."""
    victim = next(c for c in localnet.children if c.name == "miner-0")
    port = victim.url.rsplit(":", 1)[1]
    neuron = next(
        n for n in chain.metagraph(localnet.netuid).neurons if str(n.axon_url).endswith(":" + port)
    )
    page.goto("/dashboard")
    row = page.locator(f'#neurons-table tr[data-uid="{neuron.uid}"]')
    score = row.locator('td[data-field="score"]')
    expect(score).to_have_text(re.compile(r"^\d\.\d{3}$"), timeout=ROUND_TIMEOUT_MS)
    expect(page.locator("#neurons-table tr[data-stale]")).to_have_count(0)

    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait(10)
    try:
        expect(row).to_have_attribute("data-stale", "true", timeout=ROUND_TIMEOUT_MS)
        expect(row.locator('td[data-field="serving"]')).to_contain_text(
            re.compile(r"down\s*last measured (now|\d+ s ago|\d+ min ago)")
        )
        for field in ("recall", "latency", "proof_rate", "score"):
            cell = row.locator(f'td[data-field="{field}"]')
            if field == "proof_rate" and cell.inner_text() == "—":
                continue  # never challenged yet: nothing to show, stale or not
            expect(cell).to_have_class(re.compile(r"\bstale\b"))
            expect(cell).to_have_attribute("title", re.compile("before the miner went down"))
        for field in ("ema", "weight"):  # the validator's state, current even for a down miner
            expect(row.locator(f'td[data-field="{field}"]')).not_to_have_class(re.compile("stale"))
        others = page.locator('#neurons-table tr[data-role="miner"]:not([data-stale])')
        expect(others).to_have_count(2)
        expect(page.locator(f'#legend-score li.down[data-uid="{neuron.uid}"]')).to_contain_text(
            "(down)", timeout=ROUND_TIMEOUT_MS
        )
    finally:
        restarted = localnet.restart("miner-0")
        deadline = time.monotonic() + 120
        while not any(
            n.uid == neuron.uid for n in chain.metagraph(localnet.netuid).serving()
        ) or not _healthy(restarted.url):
            assert time.monotonic() < deadline, "the restarted miner did not serve again"
            time.sleep(0.5)
    expect(row).not_to_have_attribute("data-stale", "true", timeout=ROUND_TIMEOUT_MS)
    expect(row.locator('td[data-field="serving"]')).to_have_text("serving")
    expect(page.locator(f'#legend-score li[data-uid="{neuron.uid}"]')).not_to_have_class(
        re.compile("down"), timeout=ROUND_TIMEOUT_MS
    )


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
