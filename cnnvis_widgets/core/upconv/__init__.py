"""Learned inversion: up-convolutional decoders from one layer's features back to the image.

After Dosovitskiy & Brox, *Inverting visual representations with convolutional networks*
(CVPR 2016, "UpconvNet"): a decoder network is trained, with the analysed network frozen, to map
the features of a layer back to the image that produced them (pixel L2 loss, optionally plus a
feature L2 loss). Once trained, a reconstruction is one forward pass (:meth:`UpconvDecoder.
decode`), against a few hundred optimization steps for the regularized inversion of
:mod:`cnnvis_widgets.core.inversion`.

* :class:`UpconvDecoder` is sized from the layer: its channels set the width, its stride (input
  side over feature side) the number of 2x transposed-convolution stages; fully connected
  layers start from a 4x4 map.
* :func:`train_decoder_steps` yields progress (a :class:`~cnnvis_widgets.core.optimize.Step` per
  update: loss, a sample reconstruction, throughput), returns the decoder and writes
  checkpoints to the results cache (:mod:`cnnvis_widgets.cache`), keyed by model and layer; a
  new call resumes from the checkpoint. On a CUDA device it trains in mixed precision
  (``torch.autocast``).
* The default training set is offline: the packaged photos with heavy augmentation
  (:func:`cnnvis_widgets.data.datasets.augmented_samples`); any folder of images, an
  :class:`~cnnvis_widgets.data.datasets.ImageDataset`, a list of PIL images or a pixel tensor
  works too.

The package, one idea per module: ``decoder`` (the network), ``training_data`` (the images it
learns from), ``training`` (the training loop and its settings), ``checkpoints`` (the cache:
save, load, resume) and ``reconstruct`` (decoding photos with trained decoders).

Examples
--------
>>> from cnnvis_widgets import load_model                              # doctest: +SKIP
>>> from cnnvis_widgets.core import upconv                             # doctest: +SKIP
>>> h = load_model()                                                   # doctest: +SKIP
>>> for step in upconv.train_decoder_steps(h, "_blocks.3", steps=500):  # doctest: +SKIP
...     pass
>>> dec = upconv.load_decoder(h, "_blocks.3")                          # doctest: +SKIP
>>> pixels = upconv.reconstruct(h, sample_image("cat"), "_blocks.3", dec)  # doctest: +SKIP
"""

from __future__ import annotations

from .checkpoints import decoder_path, load_decoder, save_decoder, trained_steps
from .decoder import UpconvDecoder
from .reconstruct import decode_layers, reconstruct
from .training import DecoderSettings, train_decoder, train_decoder_steps
from .training_data import training_images

__all__ = [
    "UpconvDecoder",
    "DecoderSettings",
    "decoder_path",
    "save_decoder",
    "load_decoder",
    "train_decoder_steps",
    "train_decoder",
    "reconstruct",
    "training_images",
    "decode_layers",
    "trained_steps",
]
