"""The paper's method on a CLIP with a Hugging Face text tower, end to end: synthesis, Lip with the
layer selection and escalation on the ``paper`` eligibility (the encoder's layers), the evaluation
suite with every section (the textual-inversion attack included: it runs, it is not skipped), the
report and the open_clip folder.

conftest's ``tiny-hf`` (random 2-layer BERT tower, the packaged MiniLM tokenizer) on small
demo-world datasets; the forgotten class is the one of four that the seeded random model gives
noise to, so synthesis reaches its modest target for any seed. The plumbing is checked, not how
well the class is forgotten.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml

from lightning_unlearn.cli import main
from lightning_unlearn.clip.loading import load_clip

pytestmark = pytest.mark.usefixtures("one_thread", "tiny_hf_models")
VOCAB = ["anchor", "kite", "rocket", "tree"]


def config(base: Path) -> dict[str, Any]:
    return {
        "seed_everything": 0,
        "model": {"class_path": "lightning_unlearn.UnlearningModule", "init_args": {
            "model_name": "tiny-hf", "pretrained": str(base / "input.pt"), "vocabulary": VOCAB, "sigma": 0.5,
            "lr": 2e-3, "eligibility": "paper",
            "method": {"class_path": "lightning_unlearn.methods.MultimodalLipschitz",
                       "init_args": {"num_perturbations": 2, "reduction": "mean", "noise_norm": "drawn"}},
            "evaluation": {"templates": ["a photo of a {}.", "a drawing of a {}."], "retrieval_other_queries": 8,
                           "verification_images": 2, "linear_probe": True, "relearn_steps": 2,
                           "relearn_images": 2, "relearn_lr": 1e-3, "paraphrases": "demo", "plots": False,
                           "class_mean_probe": True, "class_mean_images": 2, "inversion": True,
                           "inversion_steps": 3, "inversion_images": 2}}},
        "data": {"class_path": "lightning_unlearn.datamodules.SyntheticForgetDataModule", "init_args": {
            "datasets": {"demo_objects": None, "demo_textures": None},
            "dataset_kwargs": {"demo_objects": {"num_per_class": 4}, "demo_textures": {"num_per_class": 2}},
            "batch_size": 32, "images_per_class": 4, "steps_per_epoch": 2, "progress": False,
            "cache_dir": str(base / "cache"),
            "synthesis": {"target_probability": 0.3, "min_probability": 0.27, "jitter": 2, "step_size": 3.0,
                          "max_iterations": 100, "threshold_decay": "per_image", "pixel_space": "model",
                          "jitter_mode": "symmetric", "blur_kernel_size": 3, "blur_from_first_iteration": False}}},
        "trainer": {
            "accelerator": "cpu", "max_epochs": 2, "val_check_interval": 1, "num_sanity_val_steps": 0,
            "enable_checkpointing": False, "enable_model_summary": False,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(base / "runs")}},
            "callbacks": [
                {"class_path": "lightning_unlearn.callbacks.GradientLayerSelection", "init_args": {"k": 2}},
                {"class_path": "lightning_unlearn.callbacks.NoiseLayerEscalation",
                 "init_args": {"sigma_schedule": [0.5, 1.0], "k_schedules": {"vision": [2, 4], "text": [2, 4]}}},
                {"class_path": "lightning_unlearn.callbacks.UnlearningReport", "init_args": {"print_table": False}},
            ]},
    }


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_lip_and_the_whole_suite_run_on_a_hugging_face_text_tower(tmp_path, global_seed, classes_noise_leans_to):
    pl.seed_everything(global_seed)
    clip = load_clip("tiny-hf")
    torch.save(clip.model.state_dict(), tmp_path / "input.pt")
    forget = classes_noise_leans_to(clip.model, VOCAB, model_name="tiny-hf")[0]
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path)))
    cli = main(["fit", "--config", str(path), "--seed_everything", str(global_seed),
                "--model.init_args.forget_classes", json.dumps([forget])])
    out = Path(cli.trainer.log_dir)
    report = json.loads((out / "report.json").read_text())
    assert report["optimizer_steps"] >= 1 and report["before"]["synthetic_acc"] > 0
    # the text tensors the selection kept are the encoder's layers (the paper eligibility), nothing else
    text = [name for name in report["selected_parameters"] if name.startswith("model.text.")]
    assert text and all(name.startswith("model.text.transformer.encoder.layer.") for name in text)
    changed = [name for name, value in cli.model.model.state_dict().items()
               if name.startswith("text.") and not torch.equal(value, clip.model.state_dict()[name])]
    assert changed and all(name.startswith("text.transformer.encoder.layer.") for name in changed)
    ev = report["evaluation"]
    for state in ("before", "after"):
        assert all(is_number(ev["templates"][t][state]["target"]) for t in ("a photo of a {}.", "a drawing of a {}."))
        assert is_number(ev["retrieval"]["image_from_text"][state]["target"]["p@1"])
        assert is_number(ev["recovery"]["nearest_class_mean"][state])
        assert all(is_number(ev["recovery"]["inversion"][state][key]) for key in ("target", "target_no_attack"))
    assert ev["recovery"]["inversion"]["skipped"] is None
    assert is_number(ev["recovery"]["linear_probe"]["after"]) and forget in ev["recovery"]["paraphrases"]["classes"]
    assert (out / "unlearned" / "config.json").is_file() and (out / "unlearned" / "tokenizer_config.json").is_file()
