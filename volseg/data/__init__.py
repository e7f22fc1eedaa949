"""Data: synthetic volumes, patch stores, patchify, datasets and augmentation."""
