"""Datasets: the reference layouts and any folder or CSV, read into a `DatasetDict` on disk.

Import from the modules (`medft.data.prepare.prepare_dataset`, ...): this file stays
empty so that the image-reading worker processes import only Pillow and NumPy.
"""
