import pytest
import torch

from medft.data.mixing import BatchMixer
from medft.tasks import TaskInfo

THREE = TaskInfo(["a", "b", "c"], multi_label=False)
FINDINGS = TaskInfo(["Mass", "Nodule"], multi_label=True, label_column="labels")


def batch(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 4, 4).clone()


def test_mixup_mixes_images_and_one_hot_targets_alike():
    torch.manual_seed(0)
    images, labels = batch(4), torch.tensor([0, 1, 2, 0])
    mixed, targets = BatchMixer(THREE, mixup_alpha=0.4, cutmix_alpha=0.0)(images.clone(), labels)
    for i in range(4):
        lam = (mixed[i, 0, 0, 0] - (3 - i)) / (i - (3 - i))  # image i mixed with image 3 - i
        one_hot = torch.eye(3)
        expected = lam * one_hot[labels[i]] + (1 - lam) * one_hot[labels[3 - i]]
        assert torch.allclose(targets[i], expected, atol=1e-5)
    assert torch.allclose(targets.sum(1), torch.ones(4))


def test_cutmix_mixes_multi_hot_targets_by_area():
    torch.manual_seed(1)
    images = batch(2)
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mixed, targets = BatchMixer(FINDINGS, mixup_alpha=0.0, cutmix_alpha=1.0)(images.clone(), labels)
    share_of_other = (mixed[0, 0] == 1).float().mean()  # pixels pasted from image 1
    assert targets[0].tolist() == pytest.approx([1 - share_of_other.item(), share_of_other.item()])


def test_odd_batches_are_left_unmixed():
    images, labels = batch(3), torch.tensor([0, 1, 2])
    mixed, targets = BatchMixer(THREE, 0.4, 0.0)(images.clone(), labels)
    assert torch.equal(mixed, images) and torch.equal(targets, labels)
