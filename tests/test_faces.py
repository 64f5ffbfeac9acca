"""Issue 25: a portrait's faces kept out of the deep layers' style statistics (optimiser/faces.py).

A drawn face (skin oval, eyes, brows, nose, mouth, blurred) stands in for a portrait: dlib's
detector scores it ~0.6-0.8, far above the threshold, where the example paintings have none.
"""

from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

import restyle
from restyle.cli.main import main
from restyle.config import StylizeConfig
from restyle.errors import InputError
from restyle.images import load_image, resize, to_tensor
from restyle.optimiser import faces
from restyle.optimiser.losses import gram
from restyle.optimiser.objective import features_of, style_grams
from restyle.optimiser.regions import layer_masks
from restyle.optimiser.tiling import TileSpec, full_receptive_margin

EXAMPLES = Path(restyle.__file__).parent / "examples"
LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def portrait(size: int = 160) -> Image.Image:
    """A sitter's head on a dark ground, left of centre, with room around it for the style."""
    im = Image.new("RGB", (int(size * 1.5), size), (60, 50, 40))
    d = ImageDraw.Draw(im)
    s = size / 256
    d.ellipse([78 * s, 50 * s, 178 * s, 190 * s], fill=(200, 160, 130))
    for x in (100, 140):
        d.ellipse([(x - 12) * s, 100 * s, (x + 12) * s, 112 * s], fill=(250, 250, 250))
        d.ellipse([(x - 5) * s, 101 * s, (x + 5) * s, 111 * s], fill=(30, 20, 10))
        d.rectangle([(x - 15) * s, 88 * s, (x + 15) * s, 93 * s], fill=(60, 40, 30))
    d.polygon([(128 * s, 110 * s), (120 * s, 140 * s), (136 * s, 140 * s)], fill=(170, 125, 100))
    d.ellipse([108 * s, 152 * s, 148 * s, 164 * s], fill=(150, 60, 60))
    for k in range(12):  # brushwork on the ground, right of the head
        d.line([(size * (0.9 + k * 0.04), 10), (size * (0.8 + k * 0.05), size - 10)], fill=(90 + 8 * k, 70, 40), width=3)
    return im.filter(ImageFilter.GaussianBlur(2 * s))


def test_the_head_is_found_grown_and_masked_and_a_landscape_has_none():
    x = to_tensor(portrait())
    boxes = faces.face_boxes(x)
    assert len(boxes) == 1
    left, top, right, bottom = boxes[0]
    # The drawn head spans x 78-178, y 50-190 of 256 (x of the 1.5-wide image: /384): inside the grown box.
    assert left < 78 / 384 and right > 178 / 384 and top < 60 / 256 and bottom > 180 / 256
    assert right - left < 0.6  # the ground right of the head stays
    m = faces.keep_mask(boxes, x.shape[2], x.shape[3], x.device)
    assert m[0, 0, 110 * 160 // 256, 128 * 160 // 256] == 0 and m[0, 0, 5, -5] == 1
    starry = to_tensor(resize(load_image(EXAMPLES / "starry_night.jpg"), 256))
    assert faces.face_boxes(starry) == [] and faces.keep_mask([], 10, 10, x.device) is None
    assert [faces.deep(n) for n in LAYERS] == [False, False, False, True, True]


def test_only_the_deep_layers_lose_the_face_and_a_faceless_painting_is_untouched(painter):
    x = to_tensor(portrait())
    masked, kept = style_grams(painter, x, LAYERS, None, None, "mask"), style_grams(painter, x, LAYERS, None, None, "keep")
    for n in ("relu1_1", "relu2_1", "relu3_1"):
        assert torch.equal(masked[n], kept[n])
    keep = faces.keep_mask(faces.face_boxes(x), x.shape[2], x.shape[3], x.device)
    feats = painter.features(x, LAYERS)
    for n in ("relu4_1", "relu5_1"):
        assert not torch.allclose(masked[n], kept[n])
        assert torch.allclose(masked[n], gram(feats[n], layer_masks(keep, [n])[n]))
    starry = to_tensor(resize(load_image(EXAMPLES / "starry_night.jpg"), 128))
    a, b = style_grams(painter, starry, LAYERS, None, None, "mask"), style_grams(painter, starry, LAYERS, None, None, "keep")
    assert all(torch.equal(a[n], b[n]) for n in LAYERS)


def test_masked_grams_over_tiles_equal_the_whole_images(painter):
    x = to_tensor(portrait(192))
    keep = faces.keep_mask(faces.face_boxes(x), x.shape[2], x.shape[3], x.device)
    masks = layer_masks(keep, ["relu4_1", "relu5_1"])
    whole = features_of(painter, x, LAYERS, None, grams=True, masks=masks)
    # A margin covering relu5_1's receptive field: the tiles' features are then the whole image's.
    tiled = features_of(painter, x, LAYERS, TileSpec(core=96, margin=full_receptive_margin("relu5_1")), grams=True,
                        masks=masks)
    for n in LAYERS:
        torch.testing.assert_close(tiled[n], whole[n], rtol=1e-3, atol=1e-6)  # sums in another order


def test_the_flag_and_the_presets(tmp_path, capsys):
    assert StylizeConfig().style_faces == "mask"
    assert StylizeConfig.from_preset("gatys2016").style_faces == "keep"  # the paper's statistics, as published
    with pytest.raises(InputError, match="style_faces 'hide'.*mask.*keep"):
        StylizeConfig(style_faces="hide")
    photo = EXAMPLES / "tubingen.jpg"
    with pytest.raises(SystemExit) as e:
        main(["stylize", str(photo), str(EXAMPLES / "starry_night.jpg"), "-o", str(tmp_path / "o.png"),
              "--style-faces", "hide"])
    assert e.value.code == 2
    assert "--style-faces: invalid choice: 'hide' (choose from 'mask', 'keep')" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()
