"""The paper's four datasets from one description each: :class:`DatasetSpec` and its factory.

Caltech101, Oxford Flowers 102, Stanford Cars and Stanford Dogs are all read the same way: find
the paper's layout (a CoOp/Dassl split JSON) or the standard one under the root, read it, check
that every listed image exists and wrap the result in an :class:`ImageListDataset`. Only the names,
the prompt, the two layouts and the reader of the standard layout differ, so a dataset module
holds a :class:`DatasetSpec` and gets its registered factory from :func:`define_dataset`, with a
vocabulary reader (:func:`spec_vocabulary`) that finds the layout the same way but reads only the
class names.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from lightning_unlearn.datasets._layouts import Layout, check_listed_files, locate
from lightning_unlearn.datasets._splits import Samples, classnames_from_train, load_split_json, read_split_json
from lightning_unlearn.datasets.base import ImageListDataset, Transform, register_dataset

#: The paper's zero-shot prompt for every dataset but Oxford Flowers (CoOp: one prompt, no ensembling).
PAPER_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
#: Reads a standard layout: ``(dataset folder, split) -> (samples, class names)``.
StandardReader = Callable[[Path, str], tuple[Samples, list[str]]]
#: Reads only the class names of a standard layout: ``(dataset folder, split) -> class names``.
StandardClassnames = Callable[[Path, str], list[str]]
#: The public factory of a paper dataset; its signature is the one every such dataset shares.
PaperDatasetFactory = Callable[..., ImageListDataset]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that sets one of the paper's datasets apart from the others.

    Args:
        name: registry name, also the name of the public factory (``"stanford_dogs"``).
        title: the dataset's name in messages (``"Stanford Dogs"``).
        paper: the CoOp/Dassl layout (:func:`~lightning_unlearn.datasets._layouts.paper_layout`).
        standard: torchvision's or the official layout (read by ``read_standard``).
        read_standard: reader of the standard layout.
        templates: prompt templates; the first is the paper's evaluation prompt.
        standard_source: what lists the standard layout's files, for the missing-file error.
        standard_warning: warning issued whenever the standard layout is read (``{count}`` is the
            number of images); empty for none.
        standard_classnames: reads the standard layout's class names alone, as ``read_standard``
            names them but without listing the samples; None: ``read_standard``'s.
    """

    name: str
    title: str
    paper: Layout
    standard: Layout
    read_standard: StandardReader
    templates: tuple[str, ...] = PAPER_TEMPLATES
    standard_source: str = "the split"
    standard_warning: str = ""
    standard_classnames: Optional[StandardClassnames] = None

    @property
    def layouts(self) -> tuple[Layout, ...]:
        """The accepted layouts in order of preference: the paper's first."""
        return (self.paper, self.standard)

    def read_paper(self, folder: Path, split: str) -> tuple[Samples, list[str]]:
        """``split`` of the paper's split JSON in ``folder``, with the class names from its train list."""
        json_path, image_dir = folder / self.paper.split_file, folder / self.paper.image_dir
        return read_split_json(self.title, json_path, image_dir, split, self.layouts)

    def docstring(self) -> str:
        """The public factory's docstring, built from the layouts so it cannot drift from them."""
        folders = " or ".join(dict.fromkeys(f"``{lay.folder}/``" for lay in self.layouts))
        standard_splits = ", ".join(map(repr, self.standard.splits))
        return (
            f"{self.title} as the paper evaluates it (prompt {self.templates[0]!r}).\n\n"
            "Args:\n"
            f"    root: the dataset folder ({folders}) or a data root holding it.\n"
            f"    split: 'train', 'val' or 'test' (the standard layout has {standard_splits}).\n"
            "    transform: applied to each PIL image.\n"
            "    layout: 'auto' (paper first), 'paper' or 'standard'.\n\n"
            "Raises:\n"
            "    DatasetLayoutError: no accepted layout under ``root`` (the first line says what is missing).\n"
            "    ConfigError: unknown split or layout, or a split the layout found does not have.\n"
        )


def build_dataset(
    spec: DatasetSpec,
    root: Optional[str],
    split: str = "test",
    transform: Optional[Transform] = None,
    layout: str = "auto",
) -> ImageListDataset:
    """Read ``split`` of the dataset ``spec`` describes from the first accepted layout under ``root``.

    Every image the split lists is checked to exist before the dataset is returned.
    """
    found = locate(spec.title, root, spec.layouts, split, layout)
    if found.layout is spec.paper:
        samples, classnames = spec.read_paper(found.folder, split)
    else:
        samples, classnames = spec.read_standard(found.folder, split)
        check_listed_files(spec.title, samples, spec.layouts, source=spec.standard_source)
        if spec.standard_warning:
            # stacklevel 3: the caller of the public factory, which calls this function.
            warnings.warn(spec.standard_warning.format(count=len(samples)), UserWarning, stacklevel=3)
    return ImageListDataset(
        samples, classnames, spec.templates, spec.name, transform,
        layout=found.layout.kind, root=str(found.folder), split=split,
    )


def spec_vocabulary(
    spec: DatasetSpec, root: Optional[str], split: str = "test", layout: str = "auto"
) -> tuple[list[str], list[str]]:
    """The class names and templates :func:`build_dataset` would give, from the same layout, read
    from the split JSON's train list (paper) or ``standard_classnames`` (standard): no sample
    list, no check of the listed images (the run that builds the dataset makes it).

    Raises:
        DatasetLayoutError, ConfigError: as :func:`build_dataset`, for a missing root, layout or split.
    """
    found = locate(spec.title, root, spec.layouts, split, layout)
    if found.layout is spec.paper:
        json_path = found.folder / spec.paper.split_file
        classnames = classnames_from_train(load_split_json(json_path)["train"], json_path)
    elif spec.standard_classnames is not None:
        classnames = spec.standard_classnames(found.folder, split)
    else:
        classnames = spec.read_standard(found.folder, split)[1]
    return classnames, list(spec.templates)


def define_dataset(spec: DatasetSpec, module: str) -> PaperDatasetFactory:
    """The public factory of ``spec``'s dataset, registered under ``spec.name`` with its
    vocabulary reader (:func:`spec_vocabulary`).

    Args:
        spec: the dataset's description.
        module: ``__name__`` of the defining module, so the factory reports (and pickles as) a
            function of that module.
    """

    def factory(
        root: Optional[str] = None,
        split: str = "test",
        transform: Optional[Transform] = None,
        layout: str = "auto",
    ) -> ImageListDataset:
        return build_dataset(spec, root, split, transform, layout)

    def vocabulary(
        root: Optional[str] = None, split: str = "test", layout: str = "auto"
    ) -> tuple[list[str], list[str]]:
        return spec_vocabulary(spec, root, split, layout)

    factory.__name__ = factory.__qualname__ = spec.name
    factory.__module__ = module
    factory.__doc__ = spec.docstring()
    return register_dataset(spec.name, vocabulary=vocabulary)(factory)
