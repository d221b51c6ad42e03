"""The report's plots (evaluation/plots.py): every PNG opens, and a failing plot is only a warning."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from lightning_unlearn.evaluation import plots

STATES = ["before", "after"]
P = {"p@1": 0.9, "p@5": 0.8, "p@10": 0.7}
EVALUATION = {
    "states": STATES,
    "templates": {
        key: {s: {"target": 0.5, "other_classes": 0.9,
                  "datasets": {"objects": {"accuracy": 0.9, "target": 0.5, "other_classes": 0.9},
                               "textures": {"accuracy": 0.8, "target": None, "other_classes": 0.8}}}
              for s in STATES}
        for key in ("a photo of a {}.", "We can see a {} in this image", "mean")
    },
    "retrieval": {"k": [1, 5, 10], **{kind: {s: {"target": P, "other_classes": P} for s in STATES}
                                      for kind in ("image_from_text", "image_from_image")}},
}
TRACE = {"synthetic_acc": [1.0, 0.6, 0.2], "real_valid_acc": [None, None, None], "sigma": [0.1, 0.1, 0.3],
         "k": {"vision": [5, 5, 7], "text": [5, 5, 7]}}


def test_every_plot_is_written_and_opens_as_an_image(tmp_path):
    samples = {"synthetic dog": torch.rand(3, 8, 8, 3), "real dog": torch.rand(2, 8, 8, 3)}
    written = plots.write_plots(tmp_path, EVALUATION, "objects", TRACE, samples)
    assert written == ["plots/samples.png", "plots/accuracy.png", "plots/escalation.png", "plots/retrieval.png"]
    for relative in written:
        with Image.open(tmp_path / relative) as image:
            image.verify()
            assert image.format == "PNG"


def test_a_plot_that_fails_is_a_warning_and_left_out(tmp_path):
    broken = {**EVALUATION, "retrieval": {"k": [1], "image_from_text": {}}}  # no figures to draw
    with pytest.warns(RuntimeWarning, match=r"plot 'retrieval' could not be rendered"):
        written = plots.write_plots(tmp_path, broken, "objects", None, None)
    assert written == ["plots/accuracy.png"]
    assert not (tmp_path / "plots" / "retrieval.png").exists()


def test_model_space_images_become_pixels():
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    pixels = plots.to_pixels(torch.tensor([-2.0, 0.0, 4.0]).view(1, 3, 1, 1), mean, std)
    assert pixels.shape == (1, 1, 1, 3)
    assert pixels.flatten().tolist() == [0.0, 0.5, 1.0]  # clamped to [0, 1]
