"""In a real headless Chromium: train a model from the Models page, watch it learn, use it on a clip, play it.

Screenshots go to test-artifacts/web/ (models-*.png) beside the other browser tests'.
"""

from __future__ import annotations

import pytest

from browserutil import DESKTOP, shot, watched_page
from videoutil import make_clip, pan_frames
from webutil import TRAIN_OVERRIDES, image_bytes, live_server, web_settings

pytestmark = pytest.mark.browser


@pytest.fixture
def train_server(tmp_path, tiny_weights):
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(4):
        (photos / f"p{k}.png").write_bytes(image_bytes("PNG", (64 + 8 * k, 48)))
    s = web_settings(tmp_path / "data", tiny_weights, photos_dir=photos, train_steps=(30,), default_train_steps=30,
                     max_train_steps=30, train_overrides=TRAIN_OVERRIDES, video_size=64, progress_interval=0.1)
    with live_server(s) as url:
        yield url


def test_train_watch_then_play_a_clip_through_the_model(browser, train_server, tmp_path):  # noqa: F811
    painting = tmp_path / "my painting.png"
    painting.write_bytes(image_bytes("PNG", (96, 96), "starry_night.jpg"))
    clip = make_clip(tmp_path / "walk.mp4", frames=pan_frames(96, 64, frames=12), fps=12)
    context, page, errors = watched_page(browser, DESKTOP)

    page.goto(train_server + "/")
    page.click("text=Models")
    assert page.title() == "restyle · models"
    page.set_input_files("#train-style", str(painting))
    shot(page, "models-desktop")
    with page.expect_navigation():
        page.click("#train-submit")
    assert page.text_content("h1").startswith("A model for my painting.png")

    # Progress over the stream: the step count, then the first preview grid.
    page.wait_for_function("document.getElementById('detail').textContent.includes('step ')", timeout=300_000)
    assert "/ 30" in page.text_content("#detail")
    page.wait_for_function("document.getElementById('picture').src.includes('preview.jpg')", timeout=300_000)
    shot(page, "models-training-desktop")

    page.wait_for_selector("#apply", timeout=300_000)  # the page reloads itself when the model is ready
    assert page.text_content("#state") == "done" and page.locator("#share").count() == 1
    shot(page, "models-trained-desktop")
    # Issue 27: the preview grid's frame is as tall as the grid (and its caption), not as the column beside it.
    frame, grid, caption = page.evaluate("""['figure.canvas', '#picture', 'figure.canvas figcaption'].map(
        (s) => document.querySelector(s).getBoundingClientRect().height)""")
    assert frame <= grid + caption + 2, (frame, grid, caption)
    page.set_input_files("#apply-media", str(clip))
    with page.expect_navigation():
        page.click("#apply")
    assert "walk.mp4" in page.text_content("h1")

    page.wait_for_selector("#clip", timeout=300_000)
    # The browser decodes the H.264 result: its frames have the clip's size, and it plays.
    page.wait_for_function("document.getElementById('clip').readyState >= 2", timeout=60_000)
    assert page.evaluate("[document.getElementById('clip').videoWidth, document.getElementById('clip').videoHeight]") == [64, 42]
    assert page.evaluate("document.getElementById('clip').error") is None
    page.evaluate("document.getElementById('clip').muted = true; document.getElementById('clip').play()")
    page.wait_for_function("document.getElementById('clip').currentTime > 0.2", timeout=60_000)
    shot(page, "models-clip-desktop")
    assert errors == []
    context.close()


def test_any_painting_with_less_or_more_paint(browser, tmp_path, tiny_weights):  # noqa: F811
    from tinynets import arbitrary_model_file

    painting, photo = tmp_path / "my painting.png", tmp_path / "photo.png"
    painting.write_bytes(image_bytes("PNG", (96, 96), "starry_night.jpg"))
    photo.write_bytes(image_bytes("PNG", (80, 64)))
    s = web_settings(tmp_path / "data", tiny_weights, any_painting_model=str(arbitrary_model_file(tmp_path / "a.pt")),
                     photos_dir=None)
    with live_server(s) as url:
        context, page, errors = watched_page(browser, DESKTOP)
        page.goto(url + "/models")
        assert page.locator("#apply-painting").is_hidden()  # a trained model needs no painting
        page.select_option("#apply-model", "arbitrary")
        assert page.locator("#apply-painting").is_visible() and page.text_content("#apply-strength-out") == "×1"
        page.fill("#apply-strength", "2")  # a range input: sets its value and fires input
        assert page.text_content("#apply-strength-out") == "×2"
        page.set_input_files("#apply-style", str(painting))
        page.set_input_files("#apply-media", str(photo))
        shot(page, "models-any-painting-desktop")
        with page.expect_navigation():
            page.click("#apply")
        page.wait_for_selector("#state:text('done')", timeout=120_000)
        assert "paint strength" in page.content() and "×2" in page.content()
        assert errors == []
        context.close()
