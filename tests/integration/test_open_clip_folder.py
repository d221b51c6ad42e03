"""The run's export loads in plain open_clip with no network: ``lightning-unlearn fit`` (the
training-free edit, the quickest run) on a tiny open_clip model and on a tiny Hugging Face tower
model, then ``open_clip.create_model_and_transforms("local-dir:<export>")`` in a fresh Python
process that imports no project code, with the hubs offline and another working directory; its
text and image embeddings must be those of the run's final model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lightning_unlearn.cli import main

from fake_datasets import make_image_folder, training_free_fit_config

pytestmark = pytest.mark.usefixtures("one_thread", "tiny_hf_models")
VOCAB = ["cat", "dog", "car", "tree", "boat", "house"]
FAST = dict(composed_templates=4, generic_vocabulary=["apple", "river", "mountain", "piano"], retain_templates_per_class=4)
PROMPTS = ["a photo of a dog.", "a photo of a cat.", "a blurry photo of a car in the rain"]

# One process for every folder (starting Python with torch costs seconds on a loaded machine).
PLAIN_OPEN_CLIP = """
import sys
import open_clip, torch
inputs, outputs, folders = sys.argv[1], sys.argv[2], sys.argv[3:]
data = torch.load(inputs)
results = {}
for folder in folders:
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + folder)
    tokenizer = open_clip.get_tokenizer("local-dir:" + folder)
    model.eval()
    with torch.no_grad():
        tokens = tokenizer(data["prompts"])
        results[folder] = {"tokens": tokens, "text": model.encode_text(tokens),
                           "image": model.encode_image(data["images"]), "tokenizer": type(tokenizer).__name__,
                           "text_tower": type(getattr(model, "text", model)).__name__}
results["project_imported"] = any(m.split(".")[0] == "lightning_unlearn" for m in sys.modules)
torch.save(results, outputs)
"""
MODELS = {"tiny-vit": ("SimpleTokenizer", "CLIP"), "tiny-hf": ("HFTokenizer", "HFTextEncoder")}


def fit_edit(tmp_path: Path, model_name: str) -> object:
    data = make_image_folder(tmp_path / "pets", VOCAB, 1)
    config = training_free_fit_config(model_name, None, "TextProjectionEdit", FAST, data, tmp_path / "runs",
                                      enable_model_summary=False)
    path = tmp_path / "edit.yaml"
    path.write_text(yaml.safe_dump(config))
    return main(["fit", "--config", str(path)])


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, object]:
    """Each model's run (its CLI, with the final model), and what plain open_clip computed from each export."""
    root = tmp_path_factory.mktemp("open_clip_folder")
    runs = {name: fit_edit(root / name, name) for name in MODELS}
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save({"prompts": PROMPTS, "images": images}, root / "inputs.pt")
    elsewhere = root / "elsewhere"  # another working directory than the runs'
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(root / "empty_hf_home"))
    folders = [str(Path(cli.trainer.log_dir) / "unlearned") for cli in runs.values()]
    done = subprocess.run([sys.executable, "-c", PLAIN_OPEN_CLIP, str(root / "inputs.pt"), str(root / "outputs.pt"),
                           *folders], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"runs": runs, "images": images, "plain": torch.load(root / "outputs.pt")}


@pytest.mark.parametrize("model_name", list(MODELS))
def test_the_export_loads_in_plain_open_clip_offline_and_matches_the_run(exported, model_name):
    cli = exported["runs"][model_name]
    out = Path(cli.trainer.log_dir)
    report = json.loads((out / "report.json").read_text())
    folder = Path(report["export_dir"])
    assert folder == out / "unlearned" and report["export"] == str(out / "unlearned.safetensors")
    # the weights file is the folder's weights (a hard link here: one copy on disk)
    assert os.path.samefile(out / "unlearned.safetensors", folder / "open_clip_model.safetensors")
    assert f"local-dir:{folder}" in (out / "report.md").read_text()

    plain = exported["plain"][str(folder)]
    assert exported["plain"]["project_imported"] is False
    assert (plain["tokenizer"], plain["text_tower"]) == MODELS[model_name]
    assert torch.equal(plain["tokens"], cli.model.tokenizer(PROMPTS))
    model = cli.model.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain["text"], model.encode_text(cli.model.tokenizer(PROMPTS)), rtol=0, atol=1e-6)
        torch.testing.assert_close(plain["image"], model.encode_image(exported["images"]), rtol=0, atol=1e-6)
    # what was exported is the edited model: the forgotten prompts moved
    assert report["edit"]["forget_cosine_to_original"]["mean"] < 0.99


def test_the_project_validates_an_hf_export_folder(exported, tmp_path):
    """``--model.init_args.model_name local-dir:<export>``: the folder's architecture, its weights
    loaded after construction, and the run's after-accuracy again."""
    fit = exported["runs"]["tiny-hf"]
    out = Path(fit.trainer.log_dir)
    fitted = json.loads((out / "report.json").read_text())
    config = yaml.safe_load((out.parents[2] / "edit.yaml").read_text())
    config["trainer"]["callbacks"][0]["init_args"]["output_dir"] = str(tmp_path / "validate")
    config["trainer"].update(logger=False, limit_val_batches=1.0,  # the fit validated nothing
                             default_root_dir=str(tmp_path))  # config.yaml goes there, not to the working directory
    path = tmp_path / "validate.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = main(["validate", "--config", str(path), "--model.init_args.model_name", f"local-dir:{out / 'unlearned'}"])
    assert type(cli.model.model.text).__name__ == "HFTextEncoder" and cli.model.clip.weights_pending is None
    assert cli.model.clip.weights_file == str(out / "unlearned" / "open_clip_model.safetensors")
    for (name, a), (_, b) in zip(fit.model.model.state_dict().items(), cli.model.model.state_dict().items()):
        assert torch.equal(a, b), name
    report = json.loads((tmp_path / "validate" / "report.json").read_text())
    assert report["after"]["datasets"]["image_folder"] == fitted["after"]["datasets"]["image_folder"]
