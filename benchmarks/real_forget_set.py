"""Real images of the forgotten class in place of the synthetic set: a reference, not the method.

``RealImagesForgetDataModule`` is ``SyntheticForgetDataModule`` with ``make`` replaced: instead of
synthesising ``images_per_class`` images per forgotten class, it takes that many real images of
the class from the demo world's *train* split (the evaluation uses the test split). Everything
else (the objective, layer selection, stopping, escalation, evaluation, report) is the shipped
pipeline. It answers one question: would the method be selective on the demo CLIP if the forget
images transferred perfectly to the real class? Used by ``bench_demo.py --forget-images real``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lightning_unlearn.datamodules import SyntheticForgetDataModule
from lightning_unlearn.demo.datasets import DATASET_NAMES, DemoWorldDataset
from lightning_unlearn.demo.pretrain import to_model_input
from lightning_unlearn.synthesis import SyntheticSet
from lightning_unlearn.zeroshot import encode_classes, zero_shot_logits

DOMAIN_OF = {name: domain for domain, name in DATASET_NAMES.items()}  # dataset name -> world domain


class RealImagesForgetDataModule(SyntheticForgetDataModule):
    """Serves real demo-world train images of the forgotten classes as the forget set."""

    def cache_path(self, module: Any) -> Path:
        # Never share a cache entry with a synthetic set of the same settings.
        path = super().cache_path(module)
        return path.with_name(f"real-{path.name}")

    def make(self, module: Any) -> SyntheticSet:
        spec = module.forget_spec()
        dataset_name = spec.dataset
        if dataset_name not in DOMAIN_OF:
            raise ValueError(f"real forget images exist only for {sorted(DOMAIN_OF)}, got forget_dataset={dataset_name!r}")
        train = DemoWorldDataset(DOMAIN_OF[dataset_name], split="train", num_per_class=self.images_per_class,
                                 seed=self.seed)
        if list(train.classnames) != list(spec.vocabulary):
            raise ValueError(f"the vocabulary {spec.vocabulary} is not the classes of {dataset_name}")
        labels = torch.as_tensor(train.labels)
        keep = torch.cat([torch.nonzero(labels == c).flatten() for c in spec.forget_indices])
        images = to_model_input(train.images[keep.numpy()])
        class_index = labels[keep]
        model = module.model
        was_training = model.training
        model.eval()
        with torch.no_grad():
            embeddings = encode_classes(model, module.tokenizer, spec.vocabulary, spec.templates, module.device)
            probs = zero_shot_logits(module.encode_image(images.to(module.device)), embeddings).softmax(-1).cpu()
        model.train(was_training)
        probability = probs.gather(1, class_index.unsqueeze(1)).squeeze(1)
        return SyntheticSet(
            images=images, class_index=class_index, probability=probability,
            target=torch.zeros(len(keep)), iterations=torch.zeros(len(keep), dtype=torch.long),
            reached=torch.ones(len(keep), dtype=torch.bool),
            info={"seconds": 0.0, "source": f"real {dataset_name} train-split images"},
        )
