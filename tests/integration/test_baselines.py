"""The paper's ZS baselines on a tiny model: EMMN's impair-repair schedule, its learned noise in
checkpoints and its callback requirement; amnesiac relabelling through fit."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch

from lightning_unlearn import UnlearningModule
from lightning_unlearn.callbacks import GradientLayerSelection, SyntheticAccuracyStopping, UnlearningReport
from lightning_unlearn.datamodules import SyntheticForgetDataModule
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.methods import AmnesiacRelabelling, ErrorMinMaxNoise
from lightning_unlearn.clip.loading import load_clip
from lightning_unlearn.maths.synthesis import SynthesisConfig

VOCAB = ["cat", "dog", "car", "tree"]
EASY = SynthesisConfig(target_probability=0.3, min_probability=0.27, jitter=2, step_size=3.0, max_iterations=100,
                       threshold_decay="per_image", pixel_space="model", jitter_mode="symmetric", blur_kernel_size=3,
                       blur_from_first_iteration=False)
pytestmark = pytest.mark.usefixtures("one_thread")


def fit(tmp_path, method, callbacks, max_epochs=10, seed=0, forget="dog"):
    pl.seed_everything(seed)
    module = UnlearningModule(model_name="tiny-vit", pretrained=None, forget_classes=[forget], vocabulary=VOCAB,
                              method=method, lr=1e-3)
    data = SyntheticForgetDataModule(images_per_class=2, synthesis=EASY, progress=False, cache_dir=str(tmp_path / "c"))
    out = tmp_path / "out"
    trainer = pl.Trainer(accelerator="cpu", max_epochs=max_epochs, val_check_interval=1, num_sanity_val_steps=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[*callbacks, UnlearningReport(output_dir=str(out), print_table=False)])
    trainer.fit(module, data)
    return trainer, module, json.loads((out / "report.json").read_text())


def emmn() -> ErrorMinMaxNoise:
    return ErrorMinMaxNoise(forget_noise_per_class=2, retain_noise_per_class=1, noise_steps=2, impair_steps=2,
                            repair_steps=1, retain_batch=2)


def reachable_class(seed: int, leans_to) -> str:
    """The class the module's seeded random init gives noise to: synthesis reaches it for any seed."""
    pl.seed_everything(seed)
    return leans_to(load_clip("tiny-vit").model, VOCAB)[0]


def test_emmn_runs_its_schedule_and_keeps_its_noise_for_a_resume(tmp_path, global_seed, classes_noise_leans_to):
    forget = reachable_class(global_seed, classes_noise_leans_to)
    trainer, module, report = fit(tmp_path, emmn(), [GradientLayerSelection(k=2)], seed=global_seed, forget=forget)
    assert trainer.global_step == 3  # 2 impair + 1 repair steps, then the method ends the fit
    assert report["emmn"]["forget_noise"] == 2 and report["emmn"]["retain_noise"] == 3
    state = module.method.state_dict()
    retained = [i for i, name in enumerate(VOCAB) if name != forget]
    assert state["noise"]["forget_images"].shape == (2, 3, 32, 32) and state["noise"]["retain_labels"].tolist() == retained
    fresh = emmn()
    fresh.load_state_dict(state)
    assert torch.equal(fresh._noise["forget_images"], state["noise"]["forget_images"])
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    assert set(checkpoint["unlearning_method"]["noise"]) == {"forget_images", "forget_labels", "retain_images",
                                                              "retain_labels"}


def test_emmn_refuses_the_callbacks_that_would_break_its_schedule(tmp_path):
    with pytest.raises(ConfigError, match=r"remove \['SyntheticAccuracyStopping'\] from the trainer's callbacks"):
        fit(tmp_path, emmn(), [GradientLayerSelection(k=2), SyntheticAccuracyStopping(goal=0.1)])


def test_amnesiac_relabelling_trains_through_fit(tmp_path, global_seed, classes_noise_leans_to):
    trainer, module, report = fit(tmp_path, AmnesiacRelabelling(), [GradientLayerSelection(k=2)], max_epochs=2,
                                  seed=global_seed, forget=reachable_class(global_seed, classes_noise_leans_to))
    assert trainer.global_step == 2 and report["method"]["name"] == "amns" and report["method"]["zero_shot"] == "ZS"
    assert report["optimizer_steps"] == 2 and report["stop_reason"] == "max_epochs_or_steps"
