import numpy as np

from brain_mri.data.duplicates import duplicate_groups
from brain_mri.data.index import build_index


def groups_by_path(root):
    index = build_index(root, 32)
    return dict(zip([f.path for f in index.files], index.groups.tolist(), strict=True))


def test_planted_phantom_duplicates_are_grouped_and_nothing_else(phantom_root):
    group = groups_by_path(phantom_root)
    for name in ("no", "yes"):
        assert group[f"{name}/{name}_000.png"] == group[f"{name}/{name}_copy_of_000.png"]
        assert group[f"{name}/{name}_001.png"] == group[f"{name}/{name}_resized_001.jpg"]
    assert len(group) == 44 and len(set(group.values())) == 40  # 20 distinct phantoms per class


def test_groups_are_transitive_and_numbered_in_order():
    a, b = np.eye(3, dtype=np.float32)[0], np.eye(3, dtype=np.float32)[1]
    near_a = (a + 0.3 * b) / np.linalg.norm(a + 0.3 * b)
    assert duplicate_groups(np.stack([b, a, near_a, b]), threshold=0.9).tolist() == [0, 1, 1, 0]


def test_real_copies_grouped_and_distinct_scans_apart(real_root):
    group = groups_by_path(real_root)
    assert group["yes/Y20.jpg"] == group["yes/Y92.png"]  # resized re-encoding
    assert group["no/12 no.jpg"] == group["no/no 90.jpg"]
    assert group["yes/Y255.JPG"] == group["yes/Y70.jpg"]  # Y70 is the copy with an arrow drawn in
    assert group["yes/Y92.jpg"] != group["yes/Y92.png"]  # same name, different patients
    assert group["yes/Y27.jpg"] != group["yes/Y56.jpg"]  # the most alike distinct scans
    assert len(set(group.values())) == 202


def test_a_chain_of_copies_is_one_group_though_its_ends_differ():
    angles = np.radians([0, 20, 40, 90])  # neighbours 20 degrees apart (cosine 0.94), the ends 40 (0.77)
    prints = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    assert duplicate_groups(prints, threshold=0.9).tolist() == [0, 0, 0, 1]
