import numpy as np
import pytest
from PIL import Image

from restyle.batch import run_batch
from restyle.config import StylizeConfig
from restyle.engine import make_painter, run


def _tinted(src, rgb, path):
    a = np.asarray(Image.open(src).convert("RGB"), dtype=np.float32)
    Image.fromarray((a * 0.5 + np.array(rgb, np.float32) * 0.5).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("mode", ["histogram", "luminance"])
def test_batch_result_equals_the_single_run_when_the_style_is_recoloured_per_photo(small_images, tiny_weights,
                                                                                  tmp_path, mode):
    """Regression: batch mode cached the style's Grams by (path, size, layers), but with
    --preserve-colors the style is recoloured to each photo first; the second photo got the
    first photo's recoloured style. Its batch result must equal its own single run."""
    c, s = small_images
    photos = tmp_path / "photos"
    photos.mkdir()
    _tinted(c, (255, 40, 0), photos / "a.png")
    b = _tinted(c, (0, 60, 255), photos / "b.png")
    out = tmp_path / "out"
    out.mkdir()
    cfg = StylizeConfig(size=64, iterations=3, scales=(1,), precision="fp32", preserve_colors=mode)
    painter = make_painter(cfg, tiny_weights)
    results = dict(run_batch([photos], [s], out, cfg, weights=tiny_weights, painter=painter))
    single = run(b, [s], cfg, weights=tiny_weights)
    batch_b = np.asarray(results[out / "b__s.png"].image, dtype=np.int16)
    assert np.abs(batch_b - np.asarray(single.image, dtype=np.int16)).max() == 0
    # Both photos' recoloured styles were computed: nothing was wrongly shared.
    assert painter.cache.misses == 2 and painter.cache.hits == 0


def test_batch_shares_a_style_that_is_not_recoloured(small_images, tiny_weights, tmp_path):
    c, s = small_images
    photos = tmp_path / "photos"
    photos.mkdir()
    _tinted(c, (255, 40, 0), photos / "a.png")
    _tinted(c, (0, 60, 255), photos / "b.png")
    out = tmp_path / "out"
    out.mkdir()
    cfg = StylizeConfig(size=64, iterations=2, scales=(1,), precision="fp32")
    painter = make_painter(cfg, tiny_weights)
    run_batch([photos], [s], out, cfg, weights=tiny_weights, painter=painter)
    assert painter.cache.misses == 1 and painter.cache.hits == 1
