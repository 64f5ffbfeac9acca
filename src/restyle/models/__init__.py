"""Networks: the VGG-19 feature extractor (vgg.py) and its layer table (layers.py), the
feed-forward style network (transformer.py, Johnson et al. 2016), the upscaler (upscaler.py),
and trained model files under bundled/.

Only the pure layer table is imported here, so config.py can use it without
torch; import networks from their modules (`from restyle.models.vgg import
VGG19Features`, `from restyle.models.transformer import TransformerNet`).
"""

from .layers import LAYERS, VGG19_LAYERS, Layer, deepest_layer, receptive_field  # noqa: F401
