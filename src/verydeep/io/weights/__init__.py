"""Weights in other toolkits' formats: reading the authors' Caffe files, Keras .h5 and torchvision .pth
(``convert``), writing them back (``weights_out``), and ONNX / torch.export (``export``)."""
