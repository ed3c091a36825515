"""Differentiable augmentation (``--augment``): what each transform does to known images, that
gradients reach the generator's output, and the policy's validation in the library and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ganport.cli import main
from ganport.errors import InvalidInputError
from ganport.trainer import TrainConfig
from ganport.trainer.augment import (AUGMENTATIONS, CUTOUT_RATIO, FILL, TRANSLATION_RATIO, diff_augment,
                                     parse_policy)


def _dots(n: int = 64, size: int = 28) -> torch.Tensor:
    """``n`` black images with one white pixel each, at a different place in each."""
    x = torch.full((n, 1, size, size), FILL)
    g = torch.Generator().manual_seed(1)
    ys = torch.randint(6, size - 6, (n,), generator=g)
    xs = torch.randint(6, size - 6, (n,), generator=g)
    x[torch.arange(n), 0, ys, xs] = 1.0
    return x


def test_translation_moves_each_image_by_at_most_an_eighth_and_fills_black() -> None:
    torch.manual_seed(0)
    x = _dots()
    y = diff_augment(x, ("translation",))
    limit = int(28 * TRANSLATION_RATIO + 0.5)
    shifts = set()
    for before, after in zip(x, y):
        (y0, x0), (y1, x1) = (before[0] > 0).nonzero()[0].tolist(), (after[0] > 0).nonzero()[0].tolist()
        assert abs(y1 - y0) <= limit and abs(x1 - x0) <= limit
        assert int((after > 0).sum()) == 1 and set(after.unique().tolist()) == {FILL, 1.0}
        shifts.add((y1 - y0, x1 - x0))
    assert len(shifts) > 10  # a fresh shift per image, not one for the batch


def test_cutout_blanks_one_square_of_half_the_side_per_image() -> None:
    torch.manual_seed(0)
    x = torch.ones(200, 1, 28, 28)
    y = diff_augment(x, ("cutout",))
    side = int(28 * CUTOUT_RATIO + 0.5)
    blanked = (y == FILL)[:, 0]
    assert set(y.unique().tolist()) == {FILL, 1.0}
    for mask in blanked:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert 0 < len(rows) <= side and 0 < len(cols) <= side
        assert int(mask.sum()) == len(rows) * len(cols)  # one rectangle (a square cut by the edge)
    assert blanked.float().mean(dim=(1, 2)).unique().numel() > 5


def test_color_changes_brightness_and_contrast_per_image() -> None:
    torch.manual_seed(0)
    x = _dots(32)
    y = diff_augment(x, ("color",))
    means = y.mean(dim=(1, 2, 3))
    assert means.std() > 0.1  # each image its own brightness
    assert not torch.allclose(y, x)


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_gradients_flow_through_every_transform(name: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16, requires_grad=True)
    out = diff_augment(x, (name,))
    assert out.shape == x.shape and out.dtype == x.dtype
    out.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_policy_is_parsed_in_table_order_and_unknown_names_are_refused() -> None:
    assert parse_policy("cutout, translation") == ("translation", "cutout")
    assert parse_policy("") == ()
    with pytest.raises(ValueError, match="choose from color, translation, cutout"):
        parse_policy("translation,flip")
    cfg = TrainConfig(kind="cgan", dataset="digits", augment="cutout,color").validate()
    assert cfg.augment == "color,cutout"
    with pytest.raises(InvalidInputError, match="flip"):
        TrainConfig(kind="cgan", dataset="digits", augment="flip").validate()


def test_augment_trains_through_the_cli_and_bad_policies_exit_2(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    args = ["train", "cgan", "--dataset", "digits", "--image-size", "16", "--n-samples", "64",
            "--batch-size", "8", "--latent-dim", "8", "--device", "cpu", "--steps", "3",
            "--out-dir", str(tmp_path)]
    assert main([*args, "--run-name", "aug", "--augment", "translation,cutout,color"]) == 0
    assert json.loads((tmp_path / "aug" / "config.json").read_text())["augment"] == "color,translation,cutout"
    capsys.readouterr()
    assert main([*args, "--run-name", "bad", "--augment", "mixup"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "color, translation, cutout" in err[0]
    assert not (tmp_path / "bad").exists()
