"""Feeding a prepared dataset to training: loading it, transforms, batch mixing."""
