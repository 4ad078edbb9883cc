"""The near-duplicate leakage audit (medft.prepare.leakage) on hashes with known groups."""

from __future__ import annotations

from medft.near_duplicates import hash_values
from medft.prepare.leakage import audit, format_audit

A, A_COPY = "0000000000000000", "0000000000000003"  # 2 bits apart
B, B_COPY, B_CHAIN = "ff00000000000000", "ff00000000000001", "ff00000000000007"
LONE_1, LONE_2 = "00ff00ff00ff00ff", "0f0f0f0f0f0f0f0f"


def test_groups_splits_and_copies_in_train_are_counted():
    hashes = [A, A_COPY, B, B_COPY, B_CHAIN, LONE_1, LONE_2]
    splits = ["train", "test", "train", "train", "validation", "test", "train"]
    report = audit(hash_values(hashes), splits, 2)
    assert (report.groups, report.images_in_groups, report.largest_group) == (2, 5, 3)
    assert report.groups_across_splits == 2  # A: train/test; B: train/validation
    assert report.with_copy_in_train == {"test": 1, "validation": 1}
    assert report.split_sizes == {"train": 4, "test": 2, "validation": 1}
    assert report.examples == [[2, 3, 4], [0, 1]]  # largest first
    assert report.groups_joining_patients is None


def test_patients_joined_by_a_group_are_counted():
    hashes = [A, A_COPY, B, B_COPY, LONE_1]
    splits = ["train", "test", "train", "validation", "test"]
    report = audit(hash_values(hashes), splits, 2, patients=["p1", "p2", "p3", "p3", None])
    assert report.groups_across_splits == 2
    assert report.groups_joining_patients == 1  # A under p1 and p2; B is one patient's
    text = "\n".join(format_audit(report))
    assert text.startswith("near-duplicate groups (pHash within 2 bits): 2, holding 4 of 5 images")
    assert "images with a near copy in train: test 1 of 2, validation 1 of 1" in text
    assert "groups joining two or more patients: 1" in text


def test_a_row_without_a_patient_joins_nobody():
    report = audit(hash_values([A, A_COPY]), ["train", "train"], 2, patients=[None, None])
    assert report.groups_joining_patients == 0
