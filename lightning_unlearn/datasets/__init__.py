"""Evaluation datasets: the protocol and registry (``base``) and the registered datasets.

Importing this package registers ``caltech101``, ``oxford_flowers``, ``stanford_cars``,
``stanford_dogs`` and ``image_folder``, and, lazily, the demo world's ``demo_objects`` and
``demo_textures`` (their module is imported on first use, so importing this package never
imports :mod:`lightning_unlearn.demo`). Build any of them with
``get_dataset_factory(name)(root, split, ...)``. The factories are not re-exported here because
their names equal their modules' names.
"""

from lightning_unlearn.datasets.base import *  # noqa: F401,F403
from lightning_unlearn.datasets.base import register_lazy_dataset
from lightning_unlearn.datasets import caltech101, flowers102, image_folder, stanford_cars, stanford_dogs  # noqa: F401
from lightning_unlearn.datasets._layouts import Layout, prompt_name  # noqa: F401
from lightning_unlearn.datasets._spec import DatasetSpec  # noqa: F401
from lightning_unlearn.datasets.caltech101 import caltech_classname, paper_class_folders  # noqa: F401
from lightning_unlearn.datasets.flowers102 import flower_classname  # noqa: F401
from lightning_unlearn.datasets.image_folder import read_class_list  # noqa: F401
from lightning_unlearn.datasets.stanford_cars import car_classname  # noqa: F401
from lightning_unlearn.datasets.stanford_dogs import dog_class_folders, dog_classname  # noqa: F401

# Lazy: importing the demo package imports open_clip and registers its model configs, which
# listing or building the other datasets does not need.
register_lazy_dataset("demo_objects", "lightning_unlearn.demo.world_datasets:demo_objects", needs_root=False)
register_lazy_dataset("demo_textures", "lightning_unlearn.demo.world_datasets:demo_textures", needs_root=False)
