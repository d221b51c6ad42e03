"""Oxford Flowers 102, read from the paper's CoOp layout or torchvision's layout.

Prompt: "a photo of a {}, a type of flower.". The paper's names come from ``cat_to_name.json`` via
the split JSON; torchvision's hard-coded ``Flowers102.classes`` equal them except index 59,
"pink-yellow dahlia?", whose question mark is dropped here. The paper's split is CoOp's own random
50/20/30 (test about 2,463 images); torchvision's layout gives the official ``setid.mat`` split
(test 6,149 images).

torchvision MD5-checks ``imagelabels.mat`` and ``setid.mat``; that check is kept, and a failure is
reported as such instead of torchvision's "Dataset not found or corrupted" message.
"""

from __future__ import annotations

from pathlib import Path

import torchvision
from torchvision.datasets import flowers102 as tv_flowers

from lightning_unlearn.datasets._layouts import SPLITS, Layout, paper_layout
from lightning_unlearn.datasets._spec import DatasetSpec, define_dataset
from lightning_unlearn.datasets._splits import Samples
from lightning_unlearn.core.names import prompt_name

SPLIT_FILE = "split_zhou_OxfordFlowers.json"
MAT_FILES = ("imagelabels.mat", "setid.mat")

PAPER = paper_layout(
    "oxford_flowers", SPLIT_FILE, "jpg", tree=f"{{{SPLIT_FILE}, jpg/image_00001.jpg ..., cat_to_name.json (not read)}}"
)
STANDARD = Layout(
    kind="standard",
    folder="flowers-102",
    markers=("jpg", *MAT_FILES),
    splits=SPLITS,
    tree="{jpg/image_00001.jpg ..., imagelabels.mat, setid.mat} (torchvision; original .mat files, MD5-checked)",
    fixed_folder_name=True,
)


def flower_classname(name: str) -> str:
    """The paper's name for a torchvision Flowers102 class (drops the "?" of "pink-yellow dahlia?")."""
    return prompt_name(name.rstrip("?"))


def _md5_error(folder: Path) -> RuntimeError:
    """Say which .mat file fails torchvision's MD5 check (torchvision only says "not found or corrupted")."""
    expected = {name: md5 for name, md5 in getattr(torchvision.datasets.Flowers102, "_file_dict", {}).values()}
    bad = [
        name
        for name in MAT_FILES
        if name in expected and not tv_flowers.check_integrity(str(folder / name), expected[name])
    ]
    return RuntimeError(
        f"{SPEC.title}: torchvision rejects {', '.join(repr(str(folder / name)) for name in bad or MAT_FILES)} "
        "(MD5 differs from the original file); use the original files from "
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ or the paper's layout."
    )


def _read_torchvision(folder: Path, split: str) -> tuple[Samples, list[str]]:
    """The official ``setid.mat`` split via torchvision's parser, with the paper's class names."""
    try:
        # loader=str makes torchvision return the file path instead of opening the image.
        parsed = torchvision.datasets.Flowers102(str(folder.parent), split=split, download=False, loader=str)
    except RuntimeError as err:
        raise _md5_error(folder) from err
    samples = [parsed[i] for i in range(len(parsed))]
    return samples, [flower_classname(name) for name in torchvision.datasets.Flowers102.classes]


# No standard_classnames: the class names are torchvision's, but reading the layout is what
# MD5-checks its .mat files, and a bad file should fail as early as it does when building.
SPEC = DatasetSpec(
    name="oxford_flowers", title="Oxford Flowers 102", paper=PAPER, standard=STANDARD, read_standard=_read_torchvision,
    templates=("a photo of a {}, a type of flower.",),
)
oxford_flowers = define_dataset(SPEC, __name__)
