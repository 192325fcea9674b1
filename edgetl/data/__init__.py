"""Data sets: reading, validation, splits, importers."""

from edgetl.data.dataset import Dataset, Sample, load_split, prepare_dataset

__all__ = ["Dataset", "Sample", "load_split", "prepare_dataset"]
