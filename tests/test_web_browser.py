"""End to end in a real headless Chromium (Debian's `chromium`, driven by Playwright).

Upload two images, submit, watch progress arrive, see the result, download it,
on a desktop and a phone-size screen. Screenshots of each page are kept in
test-artifacts/web/ (look at them). RESTYLE_SKIP_BROWSER=1 skips these tests
explicitly; otherwise a missing chromium is a failure, not a skip.
"""

from __future__ import annotations

import pytest
from PIL import Image

from browserutil import DESKTOP, PHONE, shot, watched_page
from webutil import image_bytes, live_server, web_settings

pytestmark = pytest.mark.browser


@pytest.fixture
def paint_server(tmp_path, tiny_weights):
    # Enough iterations that the painting takes a few seconds and progress can be watched.
    s = web_settings(tmp_path / "data", tiny_weights, overrides={"iterations": 250, "device": "cpu"},
                     snapshots=25, progress_interval=0.1)
    with live_server(s) as url:
        yield url


@pytest.fixture
def pictures(tmp_path):
    c, s = tmp_path / "my photo.jpg", tmp_path / "painting.png"
    c.write_bytes(image_bytes("JPEG", (160, 128)))
    s.write_bytes(image_bytes("PNG", (128, 128), "starry_night.jpg"))
    return c, s


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_upload_watch_and_download(browser, paint_server, pictures, viewport, tmp_path):
    tag = "desktop" if viewport is DESKTOP else "phone"
    context, page, errors = watched_page(browser, viewport, accept_downloads=True)

    page.goto(paint_server + "/")
    assert page.title() == "restyle"
    shot(page, f"index-{tag}")
    if tag == "phone":  # nothing wider than the screen
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]

    page.set_input_files("#content", str(pictures[0]))
    page.set_input_files("#style", str(pictures[1]))
    page.fill("#f-strength", "1")
    page.dispatch_event("#f-strength", "input")
    assert page.text_content("#f-strength-out") == "×2.0"
    with page.expect_navigation():
        page.click("#submit")
    assert "/jobs/" in page.url

    # Progress arrives over the stream: iteration, loss, ETA, and a preview image.
    page.wait_for_function("document.getElementById('detail').textContent.includes('iteration')", timeout=30_000)
    text = page.text_content("#detail")
    assert "/ 250" in text and "loss" in text and "left" in text
    page.wait_for_function("document.getElementById('picture').src.includes('preview.jpg')", timeout=30_000)
    assert 0 < page.evaluate("document.getElementById('bar').value") <= 1
    shot(page, f"job-running-{tag}")

    page.wait_for_selector("#download", timeout=60_000)  # the page reloads itself at the end
    assert page.text_content("#state") == "done"
    assert "/result.png" in page.get_attribute("#picture", "src")
    page.wait_for_function("document.getElementById('picture').complete", timeout=30_000)
    assert page.evaluate("document.getElementById('picture').naturalWidth") == 64
    assert "my photo.jpg" in page.text_content("h1") and "painting.png" in page.text_content("h1")
    settings_text = page.text_content(".settings-table")
    assert "style strength" in settings_text and "2.0" in settings_text  # the slider doubled it
    shot(page, f"job-done-{tag}")
    with page.expect_download() as dl:
        page.click("#download")
    saved = tmp_path / "download.png"
    dl.value.save_as(saved)
    assert dl.value.suggested_filename.startswith("restyle-") and Image.open(saved).size == (64, 51)

    page.click("text=History")
    assert page.locator(".card").count() == 1 and page.locator(".badge.done").count() == 1
    shot(page, f"history-{tag}")
    assert errors == []
    context.close()


def test_bad_upload_shows_a_message(browser, paint_server, pictures, tmp_path):
    page = browser.new_page(viewport=DESKTOP, bypass_csp=True)
    page.goto(paint_server + "/")
    fake = tmp_path / "notes.jpg"
    fake.write_text("these are my holiday notes, not a photo")
    page.set_input_files("#content", str(fake))
    page.check("input[name=style_example][value=starry_night]", force=True)
    with page.expect_navigation() as nav:
        page.click("#submit")
    assert nav.value.status == 415
    alert = page.text_content(".error")
    assert "content image: this is not a JPEG, PNG, WebP, GIF, BMP or TIFF image" in alert
    shot(page, "index-error-desktop")
    page.close()


def test_cancel_from_the_job_page(browser, paint_server, pictures):
    page = browser.new_page(viewport=DESKTOP, bypass_csp=True)
    page.goto(paint_server + "/")
    page.set_input_files("#content", str(pictures[0]))
    page.check("input[name=style_example][value=starry_night]", force=True)
    with page.expect_navigation():
        page.click("#submit")
    page.wait_for_selector("#cancel")
    with page.expect_navigation():
        page.click("#cancel")
    page.wait_for_function("document.getElementById('state').textContent === 'cancelled'", timeout=30_000)
    assert page.locator("#download").count() == 0
    page.close()


def _submit(page, paint_server, pictures, preset=None):
    page.goto(paint_server + "/")
    page.set_input_files("#content", str(pictures[0]))
    page.check("input[name=style_example][value=starry_night]", force=True)
    if preset:
        page.select_option("#f-preset", preset)
    with page.expect_navigation():
        page.click("#submit")
    assert "/jobs/" in page.url
    return page.url


def test_only_the_submitting_browser_can_cancel(browser, paint_server, pictures):
    owner = browser.new_context(viewport=DESKTOP, bypass_csp=True)
    stranger = browser.new_context(viewport=DESKTOP, bypass_csp=True)  # another browser: its own cookies
    mine = owner.new_page()
    url = _submit(mine, paint_server, pictures)
    job_id = url.rsplit("/", 1)[1]
    theirs = stranger.new_page()
    theirs.goto(url)  # the link works for anyone who has it ...
    assert theirs.text_content("h1").startswith("my photo.jpg")
    assert theirs.locator("#cancel").count() == 0  # ... but it offers no Cancel button
    status = theirs.evaluate(f"fetch('/api/jobs/{job_id}/cancel', {{method: 'POST'}}).then(r => r.status)")
    assert status == 403
    shot(theirs, "job-stranger-desktop")
    assert theirs.text_content("#state") != "cancelled"
    mine.wait_for_selector("#cancel")
    with mine.expect_navigation(timeout=60_000):
        mine.click("#cancel")
    # Generous: on a loaded machine the worker may still be starting when the cancel arrives.
    mine.wait_for_function("document.getElementById('state').textContent === 'cancelled'", timeout=90_000)
    owner.close()
    stranger.close()


def test_a_preset_sets_the_size(browser, paint_server, pictures):
    page = browser.new_page(viewport=DESKTOP, bypass_csp=True)
    page.goto(paint_server + "/")
    auto = "#f-size option[value='']"
    assert page.text_content(auto) == "auto (64 px)" and page.input_value("#f-size") == ""
    page.select_option("#f-preset", "fast")
    assert page.text_content(auto) == "auto (256 px, the preset's)"
    shot(page, "index-preset-desktop")
    _submit(page, paint_server, pictures, preset="fast")
    rows = dict(zip(page.locator(".settings-table th").all_text_contents(),
                    page.locator(".settings-table td").all_text_contents()))
    assert rows["size"] == "256" and rows["preset"] == "fast"  # not the size box's 64
    assert rows["iterations"] == "250 (256 px)"
    page.wait_for_function("document.getElementById('detail').textContent.includes('iteration')", timeout=90_000)
    assert "scale 1/1 (256×205)" in page.text_content("#detail")
    shot(page, "job-preset-desktop")
    with page.expect_navigation():
        page.click("#cancel")
    page.close()
