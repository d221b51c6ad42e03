"""The method contract: settings read back as hparams, describe(), zero-shot types, argument checks."""

from __future__ import annotations

import pytest

from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.methods import (
    EmbeddingLoss,
    ImageLipschitz,
    MultimodalLipschitz,
    NullSpaceProjection,
    TextProjectionEdit,
    UnlearningMethod,
    zero_shot_type,
)


def test_hparams_read_back_every_init_argument_including_the_base_classes():
    method = EmbeddingLoss(alpha=2, num_perturbations=3, reduction="mean")
    assert method.hparams == {"alpha": 2.0, "num_perturbations": 3, "max_batch": 256, "detach_perturbed": True,
                              "reduction": "mean", "noise_norm": "applied", "clamp": True}
    described = method.describe()
    assert described["class_path"] == "lightning_unlearn.methods.lipschitz.EmbeddingLoss"
    assert described["init_args"] == method.hparams
    rebuilt = EmbeddingLoss(**described["init_args"])
    assert rebuilt.hparams == method.hparams


def test_training_free_methods_declare_it():
    assert not TextProjectionEdit().trains and not NullSpaceProjection().trains
    assert MultimodalLipschitz().trains and TextProjectionEdit().timings == {}


def test_zero_shot_type_follows_the_data_a_run_uses():
    class WithRetain(MultimodalLipschitz):
        needs_retain_images = True

    assert zero_shot_type(MultimodalLipschitz(), real_forget_images=False) == "ZS"
    assert zero_shot_type(ImageLipschitz(), real_forget_images=True) == "semi ZS"
    assert zero_shot_type(WithRetain(), real_forget_images=True) == "not ZS"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_perturbations": 0}, "num_perturbations must be an int >= 1, got 0"),
    ({"max_batch": 0}, "max_batch must be an int >= 1 or None, got 0"),
    ({"reduction": "sum"}, "reduction must be one of 'published', 'mean', got 'sum'"),
    ({"noise_norm": "clamped"}, "noise_norm must be one of 'applied', 'drawn', got 'clamped'"),
])
def test_perturbation_settings_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        MultimodalLipschitz(**kwargs)


def test_a_method_that_forgets_to_implement_its_step_says_so():
    class Half(UnlearningMethod):
        pass

    with pytest.raises(NotImplementedError, match="Half trains but does not implement training_step"):
        Half().training_step(None, {})


def test_a_described_method_is_rebuilt_from_its_dict():
    from lightning_unlearn.methods import as_method

    original = EmbeddingLoss(alpha=0.5, num_perturbations=4)
    rebuilt = as_method(original.describe())
    assert type(rebuilt) is EmbeddingLoss and rebuilt.hparams == original.hparams
    assert as_method(original) is original
    with pytest.raises(ConfigError, match=r"method class 'builtins.dict' is not an UnlearningMethod"):
        as_method({"class_path": "builtins.dict"})
    with pytest.raises(ConfigError, match=r"method must be an UnlearningMethod or a class_path/init_args dict, got int"):
        as_method(3)


def test_edit_settings_defaults_are_the_methods():
    """EditSettings (the Trainer-free API) and TextProjectionEdit give the same defaults."""
    import inspect
    from dataclasses import fields

    from lightning_unlearn.methods.edit import EditSettings

    signature = inspect.signature(TextProjectionEdit.__init__).parameters
    # paraphrase_bank is derived (the paraphrases file, split per forgotten class at setup), not an argument
    assert {f.name: f.default for f in fields(EditSettings) if f.name != "paraphrase_bank"} == {
        f.name: signature[f.name].default for f in fields(EditSettings) if f.name != "paraphrase_bank"}
    assert TextProjectionEdit(seed=3, composed_templates=7).settings() == EditSettings(seed=3, composed_templates=7)
