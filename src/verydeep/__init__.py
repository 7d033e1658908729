"""verydeep: Simonyan & Zisserman's Very Deep ConvNets, the whole system.

Example:
    >>> import verydeep
    >>> net = verydeep.VGG("vgg16", num_classes=10, width_mult=0.125, fc_width=64, crop_size=32)
    >>> net.arch
    'D'
"""

from .models.vgg import CFGS, VGG, parse_arch

__all__ = ["CFGS", "VGG", "parse_arch"]
__version__ = "0.1.0"
