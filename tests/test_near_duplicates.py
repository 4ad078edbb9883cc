"""Perceptual hashes and near-duplicate groups (medft.near_duplicates)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.pixels import pixel_array
from sklearn.datasets import load_sample_images

from medft.errors import MedftError
from medft.near_duplicates import (
    DEFAULT_THRESHOLD,
    distance,
    hash_values,
    near_groups,
    near_pairs,
    parse_threshold,
    perceptual_hash,
)
from tests.dicom_files import pydicom_file
from tests.real_scans import SCANS, near_copies, real_scan


def real_images() -> dict[str, Image.Image]:
    """Real scans that pydicom ships and scikit-learn's two photographs."""
    images = {name: real_scan(name) for names in SCANS.values() for name in names}
    for name, photo in zip(("china.jpg", "flower.jpg"), load_sample_images().images):
        images[name] = Image.fromarray(photo)
    return images


def test_copies_of_a_real_scan_are_within_the_default_threshold():
    for name, original in real_images().items():
        for kind, copy in near_copies(original).items():
            gap = distance(perceptual_hash(original), perceptual_hash(copy))
            assert gap <= DEFAULT_THRESHOLD, f"{name}, {kind}: {gap} bits"


def test_distinct_real_images_are_far_apart():
    hashes = {name: perceptual_hash(image) for name, image in real_images().items()}
    names = list(hashes)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            assert distance(hashes[first], hashes[second]) > 3 * DEFAULT_THRESHOLD


def test_a_16_bit_image_is_hashed_by_its_own_range():
    values = pixel_array(dcmread(pydicom_file("CT_small.dcm"))).astype(np.int32) + 32768
    sixteen = Image.fromarray(values.astype(np.uint16))
    eight = real_scan("CT_small.dcm")
    assert distance(perceptual_hash(sixteen), perceptual_hash(eight)) <= 2


def test_near_pairs_are_every_pair_within_the_threshold():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=40, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, size=(40, 3)).astype(np.uint64)
    values = np.concatenate([base, base ^ flips[:, 0] ^ flips[:, 1] ^ flips[:, 2]])
    for threshold in (0, 3, 6, 30):
        expected = {
            (i, j)
            for i in range(len(values))
            for j in range(i + 1, len(values))
            if int(np.bitwise_count(values[i] ^ values[j])) <= threshold
        }
        pairs = near_pairs(values, threshold)
        assert {(int(i), int(j)) for i, j, _ in pairs} == expected
        assert all(int(np.bitwise_count(values[i] ^ values[j])) == d for i, j, d in pairs)


def test_near_pairs_between_two_sets(monkeypatch):
    monkeypatch.setattr("medft.near_duplicates.PAIR_ELEMENTS", 3)  # several blocks
    first = hash_values(["0000000000000000", "ffffffffffffffff", "00000000000000ff"])
    second = hash_values(["0000000000000001", "0f0f0f0f0f0f0f0f", "fffffffffffffff0"] * 3)
    pairs = {(int(i), int(j), int(d)) for i, j, d in near_pairs(first, 4, second)}
    assert pairs == {(0, 0, 1), (0, 3, 1), (0, 6, 1), (1, 2, 4), (1, 5, 4), (1, 8, 4)}


@pytest.mark.parametrize("threshold", [0, 2, 4, 7, 8])
def test_the_chunk_index_finds_what_comparing_every_pair_finds(threshold, monkeypatch):
    rng = np.random.default_rng(threshold)
    base = rng.integers(0, 2**63, size=300, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, size=(300, 8)).astype(np.uint64)
    near = base.copy()
    for column in range(rng.integers(0, 9)):
        near ^= flips[:, column]
    values = np.concatenate([base, near, base[:20]])  # some identical hashes too
    others = np.concatenate([near[::2], base[::3]])
    indexed = [near_pairs(values, threshold), near_pairs(values, threshold, others)]
    monkeypatch.setattr("medft.near_duplicates.MAX_INDEXED", -1)  # every pair compared
    compared = [near_pairs(values, threshold), near_pairs(values, threshold, others)]
    for found, expected in zip(indexed, compared):
        assert len(found) and np.array_equal(found, expected[np.lexsort(expected[:, 1::-1].T)])


def test_hashes_sharing_most_chunks_are_compared_pair_by_pair(monkeypatch):
    values = np.arange(400, dtype=np.uint64) * np.uint64(3)  # the high chunks all alike
    monkeypatch.setattr("medft.near_duplicates.chunk_index", None)  # not worth it: not called
    found = near_pairs(values, 3)
    monkeypatch.setattr("medft.near_duplicates.MAX_INDEXED", -1)
    assert len(found) and np.array_equal(found, near_pairs(values, 3))


def test_groups_are_connected_chains():
    # a -1 bit- b -1 bit- c: a and c are 2 bits apart, one group at threshold 1
    values = hash_values(
        ["0000000000000000", "0000000000000001", "0000000000000003", "ff00000000000000"]
    )
    groups = near_groups(values, 1)
    assert groups[0] == groups[1] == groups[2] != groups[3]
    assert len(set(near_groups(values, 0))) == 4


@pytest.mark.parametrize("given", ["17", "-1", "four", "4.5"])
def test_a_threshold_out_of_range_is_one_line(given):
    with pytest.raises(MedftError, match="--near-duplicates must be a Hamming distance"):
        parse_threshold(given)


def test_threshold_values():
    assert parse_threshold("off") is None and parse_threshold("OFF") is None
    assert parse_threshold(None) is None
    assert parse_threshold("0") == 0 and parse_threshold(6) == 6
