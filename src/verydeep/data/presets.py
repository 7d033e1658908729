"""Input normalisation presets by name (torch-free, so the command line lists them cheaply).

``paper``: RGB 0-255, the training set's mean subtracted; ``caffe``: BGR 0-255 minus the released
mean pixel; ``torchvision``: RGB 0-1, ImageNet mean and std. ``Preprocess.preset`` builds them.

Example:
    >>> from verydeep.data.presets import PRESETS
    >>> sorted(PRESETS)
    ['caffe', 'paper', 'torchvision']
"""

PRESETS = {
    "paper": {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "pixel_range": 255.0, "bgr": False},
    "caffe": {"mean": (103.939, 116.779, 123.68), "std": (1.0, 1.0, 1.0), "pixel_range": 255.0, "bgr": True},
    "torchvision": {
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "pixel_range": 1.0,
        "bgr": False,
    },
}
