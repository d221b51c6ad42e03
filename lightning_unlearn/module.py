"""``UnlearningModule``: an open_clip model, the unlearning objective and zero-shot evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import DataLoader, Subset

from lightning_unlearn.datasets.base import close_matches
from lightning_unlearn.metrics import ZeroShotEvaluation
from lightning_unlearn.models import (
    EligibilityPreset,
    eligible_groups,
    freeze_ineligible,
    load_clip,
    set_batchnorm_eval,
)
from lightning_unlearn.objectives import embedding_loss, image_lipschitz_loss, multimodal_lipschitz_loss
from lightning_unlearn.zeroshot import encode_classes, format_classname, zero_shot_logits

Objective = Literal["lipschitz", "image_lipschitz", "embedding"]


def _norm(name: str) -> str:
    return format_classname(name).strip().lower()


@dataclass
class ForgetSpec:
    """What is forgotten, and among which classes zero-shot accuracy is measured."""

    vocabulary: list[str]  # class names competing in zero-shot classification
    templates: list[str]  # prompt templates of the vocabulary
    forget_indices: list[int]  # index of each forgotten class in ``vocabulary``
    prompts: list[str]  # the unlearning prompt of each forgotten class
    dataset: Optional[str] = None  # evaluation dataset the classes belong to
    names: list[str] = field(default_factory=list)  # forgotten classes as spelled in the vocabulary


def label_lookup(classnames: Sequence[str]) -> dict[str, int]:
    """Case- and underscore-insensitive class name -> label."""
    return {_norm(c): i for i, c in enumerate(classnames)}


class UnlearningModule(pl.LightningModule):
    """Makes an open_clip model forget classes, from synthetic images of them only.

    Training: the multimodal Lipschitz loss (or a baseline objective) on a batch of synthetic
    images, each with the prompt of its class. Validation during ``fit``: zero-shot accuracy on
    the synthetic set, logged as ``forget/synthetic_acc`` (the stopping and escalation signal).
    Validation/test on an evaluation DataModule: zero-shot accuracy per dataset with the forgotten
    classes split from the others, logged as ``eval/<dataset>/{accuracy,target,other_classes}``.

    Args:
        model_name: open_clip model name, e.g. ``RN50`` or ``ViT-B-16``.
        pretrained: pretrained tag (``openai``), project tag, local checkpoint path, or None.
        forget_classes: names of the classes to forget (as spelled in the vocabulary, case-insensitive).
        forget_prompt: prompt of a forgotten class during unlearning (the paper: ``A picture of {}``).
        forget_dataset: evaluation dataset whose classes and prompt form the vocabulary (default:
            the one dataset of the DataModule that holds all forgotten classes).
        vocabulary: explicit class list for synthesis and the synthetic accuracy (instead of a dataset).
        vocabulary_template: prompt template used with an explicit ``vocabulary``.
        objective: ``lipschitz`` (the paper's multimodal loss), ``image_lipschitz`` (ULip) or ``embedding`` (Emb).
        sigma: standard deviation of the Gaussian perturbations (raised by ``NoiseLayerEscalation``).
        num_perturbations: N, perturbations per image and step.
        max_batch: most perturbed images per forward pass (memory bound), None for all at once.
        detach_perturbed: no gradient through the perturbed branch (as the published code).
        emb_alpha: weight of the pull term of the ``embedding`` objective.
        eligibility: preset of tensors that may be updated (``paper``, ``blocks``, ``all``).
        include: per tower (``vision``/``text``) regex patterns replacing the preset's.
        exclude: per tower regex patterns removed from the eligible set.
        lr: Adam learning rate (ignored when ``optimizer`` is given).
        betas: Adam betas.
        eps: Adam epsilon.
        weight_decay: Adam weight decay.
        optimizer: optimizer factory taking the eligible parameters (overrides the Adam settings).
        noise_seed: seed of the perturbation noise; each image's noise depends only on this seed,
            the global step and the image's index, so it is the same however images are split
            across devices and after a resume.
        eval_batch_size: batch size of the evaluation run by ``run_evaluation``.
        cache_dir: open_clip's weight cache folder.
    """

    def __init__(
        self,
        model_name: str = "RN50",
        pretrained: Optional[str] = "openai",
        forget_classes: Sequence[str] = ("Pekinese",),
        forget_prompt: str = "A picture of {}",
        forget_dataset: Optional[str] = None,
        vocabulary: Optional[list[str]] = None,
        vocabulary_template: str = "a photo of a {}.",
        objective: Objective = "lipschitz",
        sigma: float = 0.1,
        num_perturbations: int = 25,
        max_batch: Optional[int] = 256,
        detach_perturbed: bool = True,
        emb_alpha: float = 1.0,
        eligibility: EligibilityPreset = "paper",
        include: Optional[dict[str, list[str]]] = None,
        exclude: Optional[dict[str, list[str]]] = None,
        lr: float = 5e-5,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        weight_decay: float = 0.2,
        optimizer: Optional[OptimizerCallable] = None,
        noise_seed: int = 0,
        eval_batch_size: int = 128,
        cache_dir: Optional[str] = None,
    ) -> None:
        super().__init__()
        forget_classes = [forget_classes] if isinstance(forget_classes, str) else list(forget_classes)
        if not forget_classes:
            raise ValueError("forget_classes is empty: name at least one class to forget")
        if "{}" not in forget_prompt:
            raise ValueError(f"forget_prompt needs a '{{}}' placeholder, got {forget_prompt!r}")
        if "{}" not in vocabulary_template:
            raise ValueError(f"vocabulary_template needs a '{{}}' placeholder, got {vocabulary_template!r}")
        if objective not in ("lipschitz", "image_lipschitz", "embedding"):
            raise ValueError(f"objective must be 'lipschitz', 'image_lipschitz' or 'embedding', got {objective!r}")
        if not (sigma > 0 and sigma < float("inf")):
            raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
        if num_perturbations < 1:
            raise ValueError(f"num_perturbations must be >= 1, got {num_perturbations!r}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 or None, got {max_batch!r}")
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        self.save_hyperparameters(ignore=["optimizer"])
        self.forget_classes = forget_classes
        self.sigma = float(sigma)
        self.optimizer_factory = optimizer

        clip = load_clip(model_name, pretrained, cache_dir=cache_dir)
        self.model = clip.model
        self.tokenizer = clip.tokenizer
        self.preprocess = clip.preprocess
        self.image_mean, self.image_std, self.image_size = clip.mean, clip.std, clip.image_size
        self.groups = eligible_groups(self.model, eligibility, include, exclude)
        # DDP registers only parameters that require grad at wrap time: the whole eligible set
        # stays trainable, and GradientLayerSelection picks among it by masking gradients.
        freeze_ineligible(self.model, self.groups)
        set_batchnorm_eval(self.model)
        self._spec: Optional[ForgetSpec] = None
        self._vocab_embeddings: Optional[torch.Tensor] = None
        self.synthetic_acc = None  # created with the vocabulary size in setup
        self.evaluation: Optional[ZeroShotEvaluation] = None
        self._eval_embeddings: dict[int, torch.Tensor] = {}
        self.last_evaluation: Optional[dict[str, Any]] = None

    # --- what the callbacks and DataModules ask of the module -------------------------------
    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Eligible tensors per tower, with their names in this module (``model.`` prefix)."""
        return {tower: [(f"model.{n}", p) for n, p in params] for tower, params in self.groups.items()}

    def train(self, mode: bool = True) -> "UnlearningModule":
        super().train(mode)
        set_batchnorm_eval(self.model)  # BatchNorm statistics stay those of real data
        return self

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)

    def _evaluation_datamodule(self) -> Any:
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return None
        if hasattr(dm, "eval_datasets"):
            return dm
        return getattr(dm, "evaluation", None)

    def eval_datasets(self) -> dict[str, Any]:
        """The evaluation datasets of the attached DataModule (set up on demand)."""
        dm = self._evaluation_datamodule()
        if dm is None:
            return {}
        if not getattr(dm, "eval_datasets", None):
            if getattr(dm, "_trainer", None) is None and self._trainer is not None:
                dm.trainer = self._trainer
            dm.setup("test")
        return dict(dm.eval_datasets)

    def forget_spec(self) -> ForgetSpec:
        """Resolve the vocabulary and the forgotten classes' indices (errors name close matches)."""
        if self._spec is not None:
            return self._spec
        hp = self.hparams
        datasets = self.eval_datasets()
        if hp.vocabulary:
            vocabulary, templates, dataset = list(hp.vocabulary), [hp.vocabulary_template], None
        else:
            dataset = hp.forget_dataset or self._dataset_holding_classes(datasets)
            if dataset not in datasets:
                raise ValueError(
                    f"forget_dataset {dataset!r} is not among the evaluation datasets "
                    f"{sorted(datasets)}; add it to the DataModule or give `vocabulary`"
                )
            vocabulary, templates = list(datasets[dataset].classnames), list(datasets[dataset].templates)
        lookup = label_lookup(vocabulary)
        indices = []
        for name in self.forget_classes:
            if _norm(name) not in lookup:
                raise ValueError(self._unknown_class_message(name, vocabulary, dataset, datasets))
            indices.append(lookup[_norm(name)])
        if len(set(indices)) != len(indices):
            raise ValueError(f"forget_classes lists a class twice: {self.forget_classes}")
        self._spec = ForgetSpec(
            vocabulary=vocabulary,
            templates=templates,
            forget_indices=indices,
            prompts=[hp.forget_prompt.format(format_classname(vocabulary[i])) for i in indices],
            dataset=dataset,
            names=[vocabulary[i] for i in indices],
        )
        return self._spec

    def _dataset_holding_classes(self, datasets: dict[str, Any]) -> str:
        if not datasets:
            raise ValueError(
                "no class vocabulary: give `vocabulary` (a class list) or an evaluation DataModule "
                "whose datasets hold the forgotten classes"
            )
        holders = [
            name for name, ds in datasets.items()
            if all(_norm(c) in label_lookup(ds.classnames) for c in self.forget_classes)
        ]
        if len(holders) == 1:
            return holders[0]
        if len(holders) > 1:
            raise ValueError(
                f"forget classes {self.forget_classes} occur in several datasets {holders}; "
                "set forget_dataset"
            )
        first = self.forget_classes[0]
        raise ValueError(self._unknown_class_message(first, [], None, datasets))

    def _unknown_class_message(
        self, name: str, vocabulary: Sequence[str], dataset: Optional[str], datasets: dict[str, Any]
    ) -> str:
        where = f"dataset {dataset!r}" if dataset else "the vocabulary"
        msg = f"unknown class {name!r} in {where}" if vocabulary else f"class {name!r} is in no evaluation dataset"
        hint = close_matches(name, vocabulary) if vocabulary else []
        if hint:
            msg += f"; close matches: {', '.join(map(repr, hint))}"
        elsewhere = [d for d, ds in datasets.items() if d != dataset and _norm(name) in label_lookup(ds.classnames)]
        if elsewhere:
            msg += f". It is a class of {', '.join(map(repr, elsewhere))}: set forget_dataset accordingly"
        return msg

    # --- Lightning hooks ----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit":
            spec = self.forget_spec()
            from torchmetrics.classification import MulticlassAccuracy

            self.synthetic_acc = MulticlassAccuracy(num_classes=len(spec.vocabulary), average="micro")
            rank_zero_info(
                f"Forgetting {spec.names} among {len(spec.vocabulary)} classes"
                + (f" of {spec.dataset!r}" if spec.dataset else "")
            )

    def on_fit_start(self) -> None:
        self.train()  # Lightning 2.6 no longer switches modes at fit start; BatchNorm stays eval

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.optimizer_factory is not None:
            return self.optimizer_factory(params)
        hp = self.hparams
        return torch.optim.Adam(params, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps, weight_decay=hp.weight_decay)

    def _noise_generators(self, indices: torch.Tensor) -> list[torch.Generator]:
        # Python's hash of an int tuple is stable across processes (no PYTHONHASHSEED effect).
        device = self.device if self.device.type == "cuda" else "cpu"
        step = self.global_step
        return [
            torch.Generator(device=device).manual_seed(hash((self.hparams.noise_seed, step, int(i))) & 0x7FFF_FFFF_FFFF)
            for i in indices
        ]

    def _prompt_features(self, prompts: Sequence[str]) -> torch.Tensor:
        unique = sorted(set(prompts))
        features = self.model.encode_text(self.tokenizer(unique).to(self.device))
        return features[[unique.index(p) for p in prompts]]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        images = batch["image"]
        generators = self._noise_generators(batch["index"])
        common = dict(
            sigma=self.sigma,
            num_perturbations=hp.num_perturbations,
            max_batch=hp.max_batch,
            detach_perturbed=hp.detach_perturbed,
            generator=generators,
        )
        if hp.objective == "image_lipschitz":
            loss = image_lipschitz_loss(self.encode_image, images, **common)
        else:
            text = self._prompt_features(batch["prompt"])
            if hp.objective == "lipschitz":
                loss = multimodal_lipschitz_loss(self.encode_image, images, text, **common)
            else:
                loss = embedding_loss(self.encode_image, images, text, alpha=hp.emb_alpha, **common)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images), sync_dist=True)
        self.log("sigma", self.sigma, prog_bar=True, batch_size=len(images))
        return loss

    # --- validation: synthetic accuracy or evaluation datasets ------------------------------
    def on_validation_epoch_start(self) -> None:
        self._vocab_embeddings = None
        self._start_evaluation()

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()

    def _start_evaluation(self) -> None:
        self._eval_embeddings = {}
        self.evaluation = None

    def _ensure_evaluation(self, datasets: dict[str, Any]) -> ZeroShotEvaluation:
        if self.evaluation is None:
            num_classes = {name: len(ds.classnames) for name, ds in datasets.items()}
            targets = {}
            for name, ds in datasets.items():
                lookup = label_lookup(ds.classnames)
                targets[name] = [lookup[_norm(c)] for c in self.forget_classes if _norm(c) in lookup]
            self.evaluation = ZeroShotEvaluation(num_classes, targets).to(self.device)
        return self.evaluation

    def _synthetic_step(self, batch: dict[str, Any]) -> None:
        spec = self.forget_spec()
        if self._vocab_embeddings is None:
            self._vocab_embeddings = encode_classes(
                self.model, self.tokenizer, spec.vocabulary, spec.templates, device=self.device
            )
        logits = zero_shot_logits(self.encode_image(batch["image"]), self._vocab_embeddings)
        self.synthetic_acc.update(logits, batch["label"])
        self.log("forget/synthetic_acc", self.synthetic_acc, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(batch["image"]))

    def evaluation_step(self, batch: Sequence[torch.Tensor], dataloader_idx: int, datasets: dict[str, Any]) -> None:
        """Update the zero-shot confusion matrix of dataset number ``dataloader_idx``."""
        images, labels = batch[0], batch[1]
        evaluation = self._ensure_evaluation(datasets)
        if dataloader_idx not in self._eval_embeddings:
            ds = list(datasets.values())[dataloader_idx]
            self._eval_embeddings[dataloader_idx] = encode_classes(
                self.model, self.tokenizer, ds.classnames, ds.templates[:1], device=self.device
            )
        logits = zero_shot_logits(self.encode_image(images), self._eval_embeddings[dataloader_idx])
        evaluation.update(dataloader_idx, logits, labels)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if isinstance(batch, dict):
            self._synthetic_step(batch)
        else:
            self.evaluation_step(batch, dataloader_idx, self.eval_datasets())

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.evaluation_step(batch, dataloader_idx, self.eval_datasets())

    def _finish_evaluation(self) -> None:
        if self.evaluation is None:
            return
        results = self.evaluation.compute()
        for name, res in results.items():
            for key in ("accuracy", "target", "other_classes"):
                if res[key] is not None:
                    self.log(f"eval/{name}/{key}", res[key], add_dataloader_idx=False)
        self.last_evaluation = results
        self.evaluation.reset()

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation()

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation()

    @torch.no_grad()
    def run_evaluation(self, datasets: dict[str, Any], num_workers: int = 0) -> dict[str, dict[str, Any]]:
        """Zero-shot evaluation outside Lightning's loops (the report's before/after).

        Each rank takes every ``world_size``-th image (no padding, so counts are exact) and the
        confusion matrices are summed across ranks. Call it on every rank.
        """
        was_training = self.training
        self.eval()
        self._start_evaluation()
        world = self.trainer.world_size if self._trainer is not None else 1
        rank = self.trainer.global_rank if self._trainer is not None else 0
        for index, ds in enumerate(datasets.values()):
            shard = Subset(ds, range(rank, len(ds), world))
            for images, labels in DataLoader(shard, batch_size=self.hparams.eval_batch_size, num_workers=num_workers):
                self.evaluation_step((images.to(self.device), labels.to(self.device)), index, datasets)
        evaluation = self._ensure_evaluation(datasets)
        results = evaluation.compute()
        evaluation.reset()
        self.train(was_training)
        return results

    @torch.no_grad()
    def synthetic_accuracy(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
        """Zero-shot accuracy of the current model on synthetic images (no Lightning loop)."""
        spec = self.forget_spec()
        was_training = self.training
        self.eval()
        classes = encode_classes(self.model, self.tokenizer, spec.vocabulary, spec.templates, device=self.device)
        correct = 0
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size].to(self.device)
            pred = zero_shot_logits(self.encode_image(chunk), classes).argmax(dim=-1).cpu()
            correct += int((pred == labels[start : start + batch_size]).sum())
        self.train(was_training)
        return correct / max(1, len(images))
