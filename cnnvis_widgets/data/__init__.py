"""What we feed the networks: packaged sample photos (and, later, probe sets)."""

from __future__ import annotations

from .broden import broden_probe
from .concepts import probe_set
from .datasets import ImageDataset, augmented_samples, image_folder, sample_photos
from .images import ImageError, load_image
from .samples import sample_image, sample_images

__all__ = [
    "sample_images",
    "sample_image",
    "load_image",
    "ImageError",
    "ImageDataset",
    "augmented_samples",
    "image_folder",
    "sample_photos",
    "probe_set",
    "broden_probe",
]
