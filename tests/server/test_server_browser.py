"""The page in a real browser: Debian's chromium driven by Playwright, against a real uvicorn.

Playwright's own browser download needs the internet, so the test drives the system chromium
(``apt-get install chromium``; ``make setup`` installs it) and is skipped only without it.
"""

from __future__ import annotations

import os
import shutil

import pytest
from serving import live_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason="Debian's chromium is not installed (apt-get install chromium; make setup does)",
    ),
]


@pytest.fixture
def browser_page(make_app, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the dev extra")
    with live_server(make_app()) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.wait_for_selector("body[data-ready='true']", timeout=60_000)
            yield page
        finally:
            browser.close()


def test_a_question_streams_its_answer_and_shows_the_cited_pages(browser_page, generation_gate):
    page = browser_page
    gate = generation_gate(24, hold_at=24)  # the answer's last token waits for the test

    page.fill("#question", "What was the revenue?")
    page.select_option("#k", "2")
    page.click("#ask")
    page.wait_for_function("document.querySelector('#answer').textContent.length > 0")
    partial = page.text_content("#answer")
    status_while_generating = page.text_content("#answer-status")
    gate.release()
    page.wait_for_selector("#answer-status:has-text('Answer from the pages below')")
    page.wait_for_function(
        "[...document.querySelectorAll('#cited img')].every(i => i.complete && i.naturalWidth)"
    )

    assert partial and status_while_generating == "Answering…"
    assert page.text_content("#answer").startswith(partial)
    captions = page.locator("#cited figcaption").all_text_contents()
    assert len(captions) == 2 and all(c.startswith("report.pdf, page ") for c in captions)
    screenshot = os.environ.get("LLAMA_INDEX_VLM_SCREENSHOT")
    if screenshot:  # to look at the page by eye: LLAMA_INDEX_VLM_SCREENSHOT=/tmp/page.png
        page.screenshot(path=screenshot, full_page=True)


def test_a_cited_page_opens_with_the_matched_region(browser_page):
    page = browser_page
    page.fill("#question", "warranty")
    page.click("#search")
    page.locator("#cited button").first.click()

    page.wait_for_function("document.querySelector('#viewer-image').naturalWidth > 0")
    source = page.get_attribute("#viewer-image", "src")
    assert "/map?" in source and "query=warranty" in source
    assert page.is_visible("#viewer")


def test_a_chosen_pdf_is_indexed_and_listed(browser_page, tmp_path):
    from pdfs import write_numbered_pdf

    page = browser_page
    pdf = write_numbered_pdf(tmp_path / "Board minutes.pdf", 2, tag="browser")

    page.set_input_files("#file-input", str(pdf))

    page.wait_for_selector("#documents li:has-text('Board minutes.pdf')", timeout=60_000)
    row = page.locator("#documents li", has_text="Board minutes.pdf")
    assert "2 pages" in row.text_content()
    assert "2 pages added" in page.text_content("#jobs")


def test_a_document_is_deleted_from_the_list(browser_page):
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())

    page.click("#documents button[aria-label='Delete report.pdf']")

    page.wait_for_selector("#documents li:has-text('No documents yet')")
    page.wait_for_selector("#summary:has-text('0 pages in 0 documents')")
    assert page.locator("#documents button").count() == 0
