from PIL import Image

from medft.cli import main
from tests.helpers import FIXTURES


def test_show_augmentations_writes_a_grid(brain_multiclass, tmp_path, capsys):
    output = tmp_path / "grid.png"
    augment = ["--horizontal_flip", "0.5", "--rotation_degrees", "15", "--mixup_alpha", "0.4"]
    code = main(["show-augmentations", str(FIXTURES / "tiny_timm.yaml"), "--output", str(output),
                 "--images", "3", "--versions", "4", "--dataset_name", str(brain_multiclass),
                 *augment])  # fmt: skip
    assert code == 0 and str(output) in capsys.readouterr().out
    with Image.open(output) as grid:
        assert grid.format == "PNG"
        assert grid.height > grid.width / 5 * 3  # 3 image rows plus the mixed-batch row
