"""A running localnet and a headless Chromium for the browser tests.

The browser is Debian's ``chromium`` (``make test`` installs it), driven by
Playwright, which never downloads one. The localnet is real: LocalChain,
three miner processes, a validator and the gateway whose pages are tested,
on free loopback ports, with the real embedding model. Its logs are
attached to the report of any test that fails.
"""

from __future__ import annotations

import shutil
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from engram.localnet import Localnet
from tests.conftest import localnet_on_free_ports

CHROMIUM = "/usr/bin/chromium"
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
_LOG_TAIL_CHARS = 20_000
_RUNNING: list[Localnet] = []


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Module-scoped: Playwright's sync API keeps an event loop running in this thread, which
    would break every later test that calls ``asyncio.run``."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"the browser tests need Debian's chromium at {CHROMIUM}: run `make test`")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def localnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Localnet]:
    """Three miners, a validator and a gateway; the model cache is the session's ENGRAM_HOME."""
    net = localnet_on_free_ports(tmp_path_factory.mktemp("localnet"), 3)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ENGRAM_HOME", str(tmp_path_factory.getbasetemp() / "engram-home"))
        with net.running():
            _RUNNING.append(net)
            try:
                yield net
            finally:
                _RUNNING.remove(net)


@pytest.fixture
def page(browser: Browser, localnet: Localnet) -> Iterator[Page]:
    """A fresh tab; the test fails if the page asks any other origin or throws a JS error."""
    context = browser.new_context(
        base_url=localnet.gateway_url, viewport={"width": 1280, "height": 900}
    )
    tab = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    tab.on("request", lambda r: requests.append(r.url))
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and "Failed to load resource" not in m.text
            else None
        ),
    )
    yield tab
    context.close()
    foreign = [u for u in requests if not u.startswith(localnet.gateway_url + "/")]
    assert not foreign, f"the page asked other origins: {foreign}"
    assert not errors, f"JavaScript errors: {errors}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tail of every localnet process log to a failed test's report."""
    report = yield
    if report.failed:
        for net in _RUNNING:
            for log in sorted(Path(net.home, "logs").glob("*.log")):
                text = log.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
                report.sections.append((f"localnet log {log.name}", text))
    return report
