"""One reading of `patient_id`: a known id is its patient, a missing one its image alone."""

from datasets import Dataset

from medft.data.patients import patient_groups, patient_keys


def test_a_missing_id_is_its_image_and_a_files_frames_stay_together():
    rows = Dataset.from_dict(
        {
            "patient_id": ["p1", None, "p1", None, "", None],
            "image_id": ["a", "b", "c", "d", "e", "d"],  # d: two frames of one file
        }
    )
    groups = patient_groups(rows, "image")
    assert groups[0] == groups[2] and len(set(groups)) == 4
    assert groups[3] == groups[5] != groups[1]
    assert patient_groups(rows.remove_columns("patient_id"), "image") is None


def test_without_image_ids_a_missing_id_is_keyed_by_its_position():
    keys = patient_keys(["x", None, None, "x"])
    assert keys[0] == keys[3] and len(set(keys)) == 3
