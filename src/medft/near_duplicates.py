"""Near-duplicate images: a perceptual hash of each image, and groups of images within a
Hamming distance of one another.

The hash is imagehash's pHash (64 bits: the signs of the lowest frequencies of a 32 x 32
greyscale thumbnail's DCT). The thumbnail is made with Pillow's `reducing_gap`, which
box-averages by a whole factor before resampling: the same hash at a fraction of the cost on
large images (1024 x 1024: 0.6 ms instead of 9 ms). Copies of a scan at another size, another
JPEG quality, a few pixels' crop or in greyscale land within a few bits of each other; the
default threshold comes from measurements on real brain MRI scans (README, "Leakage audit").

Groups are connected: when a is near b and b is near c, all three are one group, so that
every chain of near copies stays in one split.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from medft.errors import MedftError
from medft.progress import progress_bar

HASH_BITS = 64
HASH_COLUMN = "perceptual_hash"  # the prepared dataset's column of each image's hash
THUMBNAIL = 32  # pHash's DCT input: hash size 8 x high-frequency factor 4
DEFAULT_THRESHOLD = 4  # bits; README "Leakage audit" shows the pairs at and beyond it
MAX_THRESHOLD = 16  # beyond this, distinct scans of one body part match
OFF = "off"
MAX_INDEXED = 7  # thresholds up to this use the chunk index (chunks of 8 bits or more)
PAIR_ELEMENTS = 2**22  # distances held at once when every pair is compared (32 MiB)


def perceptual_hash(image: Image.Image) -> str:
    """The image's 64-bit pHash as 16 hex digits (any mode; 16-bit, 32-bit and float images
    scaled by their own range first, as a model would see them)."""
    import imagehash  # scipy.fftpack on first use: not for processes that never hash

    if image.mode not in ("L", "RGB"):
        from medft.formats.windowing import (
            to_model_image,  # pydicom: only for the images that need it
        )

        image = to_model_image(image)
        image = image if image.mode in ("L", "RGB") else image.convert("RGB")
    small = image.resize((THUMBNAIL, THUMBNAIL), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return str(imagehash.phash(small))


def hash_values(hashes: list[str]) -> np.ndarray:
    """Hex hashes as unsigned 64-bit integers, for fast distances."""
    return np.array([int(value, 16) for value in hashes], dtype=np.uint64)


def distance(first: str, second: str) -> int:
    """Hamming distance between two hex hashes."""
    return int(np.bitwise_count(np.uint64(int(first, 16)) ^ np.uint64(int(second, 16))))


def parse_threshold(value: str | int | None) -> int | None:
    """``--near-duplicates``: a distance in bits (0 groups identical hashes only), or 'off'."""
    if value is None or str(value).strip().lower() == OFF:
        return None
    try:
        threshold = int(str(value).strip())
    except ValueError:
        threshold = -1
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise MedftError(
            f"--near-duplicates must be a Hamming distance from 0 to {MAX_THRESHOLD} bits, or "
            f"'{OFF}', got {value!r}; the default, {DEFAULT_THRESHOLD}, groups resized, "
            "re-encoded and greyscale copies of a scan (README, Leakage audit)."
        )
    return threshold


def near_pairs(
    values: np.ndarray, threshold: int, others: np.ndarray | None = None, progress: bool = False
) -> np.ndarray:
    """(i, j, distance) rows for the pairs within ``threshold`` bits: i < j within ``values``,
    or, with ``others``, i in ``values`` and j in ``others``; sorted by i, then j.

    Up to `MAX_INDEXED` bits, by the pigeonhole principle: cut into ``threshold + 1`` chunks,
    two hashes within ``threshold`` bits agree on at least one chunk, so only hashes sharing a
    chunk need comparing (`chunk_index`: 112,120 NIH-like hashes in seconds, where comparing
    every pair took minutes). Where the chunks are shared so widely that this saves little,
    every pair is compared, `PAIR_ELEMENTS` distances at a time."""
    against = values if others is None else others
    within = others is None
    together = values if within else np.concatenate([values, against])
    chunks = chunk_keys(together, threshold) if threshold <= MAX_INDEXED else []
    every_pair = len(values) * len(against) / (2 if within else 1)
    if chunks and sum(candidates(keys, len(values), within) for keys in chunks) < every_pair / 4:
        return chunk_index(chunks, values, against, threshold, within)
    found = [np.empty((0, 3), dtype=np.int64)]
    rows_per_block = max(1, PAIR_ELEMENTS // max(1, len(against)))
    starts = range(0, len(values), rows_per_block)
    for start in progress_bar(starts, desc="Comparing hashes", unit="block", disable=not progress):
        block = values[start : start + rows_per_block]
        first = start if within else 0
        distances = np.bitwise_count(block[:, None] ^ against[None, first:])
        rows, columns = np.nonzero(distances <= threshold)
        columns = columns + first
        keep = columns > rows + start if within else slice(None)
        rows, columns = rows[keep] + start, columns[keep]
        found.append(np.stack([rows, columns, distances[rows - start, columns - first]], axis=1))
    return np.concatenate(found)


def chunk_keys(together: np.ndarray, threshold: int) -> list[np.ndarray]:
    """Each hash cut into ``threshold + 1`` chunks of bits: a key array per chunk."""
    bits = -(-HASH_BITS // (threshold + 1))
    return [
        (together >> np.uint64(offset)) & np.uint64(2**bits - 1)
        for offset in range(0, HASH_BITS, bits)
    ]


def candidates(keys: np.ndarray, count: int, within: bool) -> int:
    """How many pairs share the chunk ``keys`` (within the first ``count``, or across)."""
    if within:
        shared = np.unique(keys, return_counts=True)[1].astype(np.int64)
        return int((shared * (shared - 1) // 2).sum())
    left = dict(zip(*np.unique(keys[:count], return_counts=True)))
    right = zip(*np.unique(keys[count:], return_counts=True))
    return int(sum(int(left.get(key, 0)) * int(number) for key, number in right))


def chunk_index(
    chunks: list[np.ndarray],
    values: np.ndarray,
    against: np.ndarray,
    threshold: int,
    within: bool,
) -> np.ndarray:
    """`near_pairs` through the chunks: for each chunk, the hashes sorted by it, each compared
    with those that follow it while they share the chunk; the pairs within ``threshold`` kept
    at each step, so memory holds the pairs found, not the candidates."""
    count, found = len(values), [np.empty((0, 3), dtype=np.int64)]
    for keys in chunks:
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        going, step = np.arange(len(order)), 1  # positions whose run of equal keys goes on
        while len(going):
            going = going[going + step < len(order)]
            going = going[keys[going] == keys[going + step]]
            first, second = order[going], order[going + step]
            if not within:  # one hash of each set; the lower index is from ``values``
                mixed = (first < count) != (second < count)
                first, second = first[mixed], second[mixed]
            rows, columns = np.minimum(first, second), np.maximum(first, second)
            columns = columns if within else columns - count
            distances = np.bitwise_count(values[rows] ^ against[columns]).astype(np.int64)
            close = distances <= threshold
            found.append(np.stack([rows[close], columns[close], distances[close]], axis=1))
            step += 1
    return np.unique(np.concatenate(found), axis=0)  # a pair may share several chunks


def near_groups(values: np.ndarray, threshold: int, progress: bool = False) -> np.ndarray:
    """A group number per hash: connected components of the pairs within ``threshold``."""
    pairs = near_pairs(values, threshold, progress=progress)
    from scipy.sparse import coo_matrix  # here: the options' modules import this one
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix(
        (np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])),
        shape=(len(values), len(values)),
    )
    return connected_components(graph, directed=False)[1]
