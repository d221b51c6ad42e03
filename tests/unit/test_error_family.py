"""One error family: bad input given to any public entry point raises an ``UnlearnError`` that is
also the built-in exception it refines (``ValueError``, ``FileNotFoundError``, ``KeyError``, ...),
so the command line prints it in one line and ``except ValueError`` keeps working."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
import torch

from lightning_unlearn.core.errors import UnlearnError

BUILTIN_BASES = (ValueError, TypeError, KeyError, LookupError, OSError, RuntimeError)


def _cases() -> list[tuple[str, Callable[[Any], Any]]]:
    """(what, call(tmp_path)) pairs, each given bad input; imports happen inside the calls."""

    def module(**kwargs: Any) -> Callable[[Any], Any]:
        def build(tmp_path: Any) -> Any:
            from lightning_unlearn import UnlearningModule

            return UnlearningModule(**{"model_name": "tiny-vit", "pretrained": None, **kwargs})
        return build

    def split_file(tmp_path: Any) -> Any:
        from lightning_unlearn.datasets._splits import load_split_json

        path = tmp_path / "split.json"
        path.write_text(json.dumps([["a.jpg", 0, "cat"]]))  # a list, not {"train": ..., "val": ..., "test": ...}
        return load_split_json(path)

    def zero_shot_update(logits: torch.Tensor, labels: torch.Tensor) -> Callable[[Any], Any]:
        def update(tmp_path: Any) -> Any:
            from lightning_unlearn.maths.metrics import ZeroShotAccuracy

            return ZeroShotAccuracy(3, target_labels=[0]).update(logits, labels)
        return update

    return [
        ("module: unknown model", module(model_name="tiny-vitt")),
        ("module: missing checkpoint", module(pretrained="/no/such/weights.safetensors")),
        ("module: unknown pretrained tag", module(pretrained="opnai")),
        ("module: negative sigma", module(sigma=-1.0)),
        ("module: empty forget list", module(forget_classes=[])),
        ("module: bad prompt", module(forget_prompt="no placeholder")),
        ("selection: k = 0", lambda _: __import__("lightning_unlearn.callbacks", fromlist=["x"])
         .GradientLayerSelection(k=0)),
        ("selection: get_k of an unknown group", lambda _: __import__("lightning_unlearn.callbacks",
         fromlist=["x"]).GradientLayerSelection(k={"vision": 1}).get_k("text")),
        ("stopping: goal 2", lambda _: __import__("lightning_unlearn.callbacks", fromlist=["x"])
         .SyntheticAccuracyStopping(goal=2.0)),
        ("escalation: empty schedule", lambda _: __import__("lightning_unlearn.callbacks", fromlist=["x"])
         .NoiseLayerEscalation(sigma_schedule=[])),
        ("report: export name", lambda _: __import__("lightning_unlearn.callbacks", fromlist=["x"])
         .UnlearningReport(export_name="weights.pt")),
        ("method: lipschitz perturbations", lambda _: __import__("lightning_unlearn.methods", fromlist=["x"])
         .MultimodalLipschitz(num_perturbations=0)),
        ("method: EMMN steps", lambda _: __import__("lightning_unlearn.methods", fromlist=["x"])
         .ErrorMinMaxNoise(noise_steps=0)),
        ("method: class path", lambda _: __import__("lightning_unlearn.methods", fromlist=["x"])
         .as_method({"class_path": "lightning_unlearn.methods.Nope"})),
        ("datamodule: unknown dataset", lambda _: __import__("lightning_unlearn.datamodules", fromlist=["x"])
         .EvaluationDataModule(datasets=["stanford_dgos"])),
        ("datamodule: images per class", lambda _: __import__("lightning_unlearn.datamodules",
         fromlist=["x"]).SyntheticForgetDataModule(images_per_class=0, datasets=["demo_objects"])),
        ("datasets: unknown factory", lambda _: __import__("lightning_unlearn.datasets", fromlist=["x"])
         .get_dataset_factory("caltech")),
        ("datasets: missing root", lambda tmp: __import__("lightning_unlearn.datasets", fromlist=["x"])
         .get_dataset_factory("stanford_dogs")(str(tmp / "nothing"), "test")),
        ("datasets: malformed split file", split_file),
        ("synthesis: target probability", lambda _: __import__("lightning_unlearn.maths.synthesis", fromlist=["x"])
         .SynthesisConfig(target_probability=1.5)),
        ("spec: unknown class", lambda _: __import__("lightning_unlearn.maths.forget_spec", fromlist=["x"])
         .resolve_forget_spec(["Pekinesee"], {"dogs": __import__("lightning_unlearn.maths.forget_spec",
                                                                 fromlist=["x"]).Vocabulary(("Pekinese",), ("{}",))})),
        ("clip: unknown model", lambda _: __import__("lightning_unlearn.clip.loading", fromlist=["x"])
         .load_clip("tiny-vitt")),
        ("evaluation: unknown section setting", lambda _: __import__("lightning_unlearn.evaluation", fromlist=["x"])
         .EvaluationSuite(retrieval_k=[0])),
        ("presets: unknown method", lambda _: __import__("lightning_unlearn.presets", fromlist=["x"])
         .get_preset("lipp")),
        ("cli: unknown packaged config", lambda _: __import__("lightning_unlearn.trainer_cli", fromlist=["x"])
         .resolve_config("dem")),
        ("demo: unknown domain", lambda _: __import__("lightning_unlearn.demo.world", fromlist=["x"])
         .check_split("training")),
        ("demo: dataset size", lambda _: __import__("lightning_unlearn.demo.world_datasets", fromlist=["x"])
         .DemoWorldDataset("objects", "test", num_per_class=0)),
        ("demo: pretraining batch repeats", lambda _: __import__("lightning_unlearn.demo.pretrain", fromlist=["x"])
         .DemoWorldDataModule(batch_repeats=0)),
        ("metric: logits of the wrong width", zero_shot_update(torch.zeros(2, 4), torch.tensor([0, 1]))),
        ("metric: a label out of range", zero_shot_update(torch.zeros(2, 3), torch.tensor([0, 3]))),
        ("metric: float labels", zero_shot_update(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))),
        ("metric: one label per row", zero_shot_update(torch.zeros(2, 3), torch.tensor([0]))),
    ]


CASES = _cases()


@pytest.mark.parametrize("what, call", CASES, ids=[what for what, _ in CASES])
def test_bad_input_raises_the_project_error_family(what: str, call: Callable[[Any], Any], tmp_path) -> None:
    with pytest.raises(UnlearnError) as info:
        call(tmp_path)
    err = info.value
    assert isinstance(err, BUILTIN_BASES), f"{what}: {type(err).__mro__} refines no built-in exception"
    assert str(err).strip(), f"{what}: the error says nothing"
