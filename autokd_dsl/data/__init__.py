"""Datasets held in memory as tensors: loading (never downloading), splitting, normalising and batching.

>>> bundle = load_data(DataConfig(name="digits", input_size=(1, 8, 8)))
>>> describe(bundle)
'digits: train 1294, val 144, test 359, 10 classes, input 1x8x8, augment off'
"""

from .config import DataConfig, dataset_names, normalize_name
from .core import DataBundle, Split, batches, describe, load_data, random_crop_flip

__all__ = [
    "DataBundle",
    "DataConfig",
    "Split",
    "batches",
    "dataset_names",
    "describe",
    "load_data",
    "normalize_name",
    "random_crop_flip",
]
