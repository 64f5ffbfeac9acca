"""Compatibility shim: the VGG-19 extractor moved to restyle.models.vgg."""

from .models.vgg import (  # noqa: F401
    CAFFE_MEAN_BGR, IMAGENET_MEAN, IMAGENET_STD, VGG19_WIDTHS, VGG19Features, deepest_layer, receptive_field,
)
