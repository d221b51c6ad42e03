"""``UnlearningModule``: an open_clip model, one unlearning method, and zero-shot evaluation."""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Optional, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import DataLoader

from lightning_unlearn.core._distributed import on_rank_zero, share_weights_from_rank_zero
from lightning_unlearn.core._validation import _positive_number_validation, _template_validation
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.evaluation.encodings import StateEncodings
from lightning_unlearn.evaluation.suite import EvaluationRunner, EvaluationSuite, as_suite, exported_reference
from lightning_unlearn.methods import MultimodalLipschitz, UnlearningMethod, as_method
from lightning_unlearn.lightning.wiring import connect_callbacks
from lightning_unlearn.maths.metrics import ZeroShotAccuracy
from lightning_unlearn.clip.prefix_cache import PrefixCachedEncoder
from lightning_unlearn.clip.loading import (
    EligibilityPreset,
    build_pretrained,
    clip_architecture,
    eligible_groups,
    eval_mode,
    freeze_ineligible,
    load_pending_weights,
    model_fingerprint,
    set_batchnorm_eval,
    set_dropout_eval,
)
from lightning_unlearn.maths.forget_spec import ForgetSpec, Vocabulary, resolve_forget_spec
from lightning_unlearn.maths.zeroshot import class_embeddings, tokenize_classes, zero_shot_logits


class UnlearningModule(pl.LightningModule):
    """Makes an open_clip model forget classes with a pluggable :class:`UnlearningMethod`.

    Construction reads no weights: ``prepare_data`` obtains the ``pretrained`` weights once per
    node (downloads a tag, builds the demo CLIP, reads a file) and loads them; ``setup`` loads
    them on the other processes, resolves the forget spec against the DataModule's ``vocabularies`` and tokenises the
    prompts once. Training steps are the method's loss on a batch of forget images; validation
    during ``fit`` is the zero-shot accuracy on the forget set, logged as ``forget/synthetic_acc``
    (the stopping and escalation signal). A training-free method edits the weights once at fit start
    and no optimiser step runs. ``validate``/``test`` on evaluation datasets log
    ``eval/<dataset>/{accuracy,target,other_classes}`` and run the evaluation suite on the given
    weights (:attr:`evaluation_results`, which :class:`~lightning_unlearn.callbacks.UnlearningReport`
    writes); in ``fit`` the report runs it before and after unlearning.

    Args:
        model_name: open_clip model name, e.g. ``RN50`` or ``ViT-B-16``.
        pretrained: pretrained tag (``openai``), project tag (``demo-world``), local checkpoint path, or None.
        forget_classes: names of the classes to forget (as spelled in the vocabulary, case-insensitive).
        forget_prompt: prompt of a forgotten class during unlearning (the paper: ``A picture of {}``).
        forget_dataset: evaluation dataset whose classes and templates form the vocabulary (default:
            the one dataset of the DataModule that holds all forgotten classes).
        vocabulary: explicit class list for synthesis and the synthetic accuracy (instead of a dataset).
        vocabulary_template: prompt template used with an explicit ``vocabulary``.
        method: the unlearning method (default: the paper's ``MultimodalLipschitz``).
        sigma: initial standard deviation of the perturbations of noise-based methods; the current
            value lives in ``self.sigma`` (a buffer: checkpoints keep it; ``NoiseLayerEscalation`` raises it).
        noise_seed: seed of the perturbation noise; each image's noise depends only on this seed,
            the global step and the image's index, so it is the same however images are split
            across devices and after a resume.
        eligibility: preset of tensors that may be updated (``paper``, ``blocks``, ``all``).
        include: per tower (``vision``/``text``) regex patterns replacing the preset's.
        exclude: per tower regex patterns removed from the eligible set.
        lr: Adam learning rate (ignored when ``optimizer`` is given).
        betas: Adam betas.
        eps: Adam epsilon.
        weight_decay: Adam weight decay (coupled: added to the gradient, as ``torch.optim.Adam``).
        optimizer: optimizer factory taking the eligible parameters (overrides the Adam settings).
        cache_dir: open_clip's weight cache folder.
        evaluation: what the evaluation suite measures besides top-1 accuracy (templates,
            retrieval, real-image verification, recovery probes, plots); None: the defaults of
            :class:`~lightning_unlearn.evaluation.EvaluationSuite`.
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
        method: Optional[UnlearningMethod] = None,
        sigma: float = 0.1,
        noise_seed: int = 0,
        eligibility: EligibilityPreset = "paper",
        include: Optional[dict[str, list[str]]] = None,
        exclude: Optional[dict[str, list[str]]] = None,
        lr: float = 5e-5,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        weight_decay: float = 0.2,
        optimizer: Optional[OptimizerCallable] = None,
        cache_dir: Optional[str] = None,
        evaluation: Optional[EvaluationSuite] = None,
    ) -> None:
        super().__init__()
        self._check_arguments(forget_prompt, vocabulary_template, sigma, lr, weight_decay)
        self.method = as_method(method) if method is not None else MultimodalLipschitz()
        self.evaluation = as_suite(evaluation)  # also accepts the dict a checkpoint's hparams hold
        self._save_hparams()
        self.forget_classes = [forget_classes] if isinstance(forget_classes, str) else list(forget_classes)
        if not self.forget_classes:
            raise ConfigError("forget_classes is empty: name at least one class to forget")
        self.optimizer_factory = optimizer
        self.register_buffer("_sigma", torch.tensor(float(sigma), dtype=torch.float64))
        self._build_model(model_name, pretrained, cache_dir, eligibility, include, exclude)
        self._init_run_state()

    @staticmethod
    def _check_arguments(forget_prompt: str, vocabulary_template: str, sigma: float, lr: float,
                         weight_decay: float) -> None:
        _template_validation("forget_prompt", forget_prompt)
        _template_validation("vocabulary_template", vocabulary_template)
        _positive_number_validation("sigma", sigma)
        _positive_number_validation("lr", lr)
        _positive_number_validation("weight_decay", weight_decay, allow_zero=True)

    def _save_hparams(self) -> None:
        """The init arguments, with the method and the suite as plain dicts (checkpoints load with
        ``weights_only``; a class_path/init_args dict is what ``load_from_checkpoint`` passes back)."""
        self.save_hyperparameters(ignore=["method", "optimizer", "evaluation"], frame=inspect.currentframe().f_back)
        self.hparams["method"] = self.method.describe()
        self.hparams["evaluation"] = self.evaluation.describe()

    def _build_model(self, model_name: str, pretrained: Optional[str], cache_dir: Optional[str],
                     eligibility: EligibilityPreset, include: Optional[dict[str, list[str]]],
                     exclude: Optional[dict[str, list[str]]]) -> None:
        """The architecture at its random initialisation (weights load in prepare_data/setup) and
        the eligible tensors."""
        self.clip = clip_architecture(model_name, pretrained, cache_dir=cache_dir)
        self.model = self.clip.model
        self.tokenizer = self.clip.tokenizer
        self.preprocess = self.clip.preprocess
        self.image_mean, self.image_std, self.image_size = self.clip.mean, self.clip.std, self.clip.image_size
        self.groups = eligible_groups(self.model, eligibility, include, exclude)
        # DDP registers only parameters that require grad at wrap time: the whole eligible set
        # stays trainable, and GradientLayerSelection picks among it by masking gradients.
        freeze_ineligible(self.model, self.groups)
        set_batchnorm_eval(self.model)
        set_dropout_eval(self.model)

    def _init_run_state(self) -> None:
        """What a run fills in: the spec (setup), metrics, the suite's runner and results."""
        self.spec: Optional[ForgetSpec] = None
        self.method_report: Optional[dict[str, Any]] = None
        self.synthetic_metric: Optional[ZeroShotAccuracy] = None
        self.eval_metrics = nn.ModuleDict()
        # The running validation/test epoch's encodings (one model state), shared with the suite.
        self._epoch_encodings: Optional[StateEncodings] = None
        self.evaluation_runner: Optional[EvaluationRunner] = None
        #: The suite's figures of the last validate/test run: ``{"after": {...}}`` (see ``evaluation.assemble``).
        self.evaluation_results: Optional[dict[str, Any]] = None
        self._captured: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        # the vocabulary's encoder across validations (a Hugging Face tower's unchanged layers reused)
        self._vocabulary_encoder: Optional[PrefixCachedEncoder] = None

    # --- the noise level: one value, saved in checkpoints ------------------------------------
    @property
    def sigma(self) -> float:
        """Current standard deviation of the perturbations (``NoiseLayerEscalation`` sets it)."""
        return float(self._sigma)

    @sigma.setter
    def sigma(self, value: float) -> None:
        _positive_number_validation("sigma", value)
        self._sigma.fill_(float(value))

    # --- what the callbacks, the DataModules and the methods read -----------------------------
    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Eligible tensors per tower, with their names in this module (``model.`` prefix)."""
        return {tower: [(f"model.{n}", p) for n, p in params] for tower, params in self.groups.items()}

    @property
    def attached_trainer(self) -> Optional[pl.Trainer]:
        """The Trainer this module is attached to, or None (``self.trainer`` raises outside one)."""
        try:
            return self.trainer
        except RuntimeError:
            return None

    @property
    def world_size(self) -> int:
        """Number of processes training together (1 outside a Trainer)."""
        trainer = self.attached_trainer
        return trainer.world_size if trainer is not None else 1

    def weights_fingerprint(self) -> str:
        """A short hash of the model's weights (keys caches of what is derived from them)."""
        return model_fingerprint(self.model)

    def train(self, mode: bool = True) -> "UnlearningModule":
        super().train(mode)
        set_batchnorm_eval(self.model)  # BatchNorm statistics stay those of real data
        set_dropout_eval(self.model)  # no random masks (a Hugging Face text tower has dropout)
        return self

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) image embeddings."""
        return self.model.encode_image(images)

    def resolve_spec(self, vocabularies: Mapping[str, Vocabulary]) -> ForgetSpec:
        """Resolve what to forget among ``vocabularies`` and tokenise its prompts (once)."""
        hp = self.hparams
        explicit = Vocabulary(tuple(hp.vocabulary), (hp.vocabulary_template,)) if hp.vocabulary else None
        self.spec = resolve_forget_spec(self.forget_classes, vocabularies, hp.forget_prompt, hp.forget_dataset,
                                        explicit)
        vocabulary = self.spec.vocabulary
        self.register_buffer("vocab_tokens", tokenize_classes(self.tokenizer, vocabulary.classnames,
                                                              vocabulary.templates), persistent=False)
        self.register_buffer("forget_tokens", self.tokenizer(list(self.spec.prompts)), persistent=False)
        self._row_of_label = {label: row for row, label in enumerate(self.spec.forget_indices)}
        return self.spec

    def forget_text_features(self, labels: torch.Tensor) -> torch.Tensor:
        """Raw text embeddings of each image's unlearning prompt ``[B, D]`` (with gradient)."""
        rows = torch.tensor([self._row_of_label[int(label)] for label in labels], device=self.device)
        return self.model.encode_text(self.forget_tokens)[rows]

    @torch.no_grad()
    def vocabulary_embeddings(self) -> torch.Tensor:
        """Normalised class embeddings ``[C, D]`` of the spec's vocabulary (template-averaged)."""
        # encoded after every optimizer step (the stopping signal): a Hugging Face tower runs only
        # from its lowest changed layer (the same tensors; PrefixCachedEncoder)
        if self._vocabulary_encoder is None or self._vocabulary_encoder.model is not self.model:
            self._vocabulary_encoder = PrefixCachedEncoder(self.model)
        with eval_mode(self.model):
            return class_embeddings(self._vocabulary_encoder, self.vocab_tokens)

    def noise_generators(self, indices: torch.Tensor) -> list[torch.Generator]:
        """One generator per image, seeded by (noise_seed, global step, image index)."""
        # Python's hash of an int tuple is stable across processes (no PYTHONHASHSEED effect).
        device = self.device if self.device.type == "cuda" else "cpu"
        step = self.global_step
        return [
            torch.Generator(device=device).manual_seed(hash((self.hparams.noise_seed, step, int(i))) & 0x7FFF_FFFF_FFFF)
            for i in indices
        ]

    # --- Lightning hooks ----------------------------------------------------------------------
    def configure_callbacks(self) -> list[Callback]:
        """Adds no callback: connects the run's own (Lightning glue, see :mod:`~lightning_unlearn.lightning.wiring`).

        This hook runs before any callback's ``setup`` and is where Lightning shows the module the
        trainer's callbacks; a YAML callback list cannot pass one callback to another, so the
        escalation, the selection and the report are connected here.
        """
        connect_callbacks(self.trainer.callbacks, self.method)
        return []

    def prepare_data(self) -> None:
        # Once per node, before any setup: the other processes wait (Lightning's barrier). Downloads
        # an open_clip tag, builds project-made weights, reads a local file; and loads them.
        build_pretrained(self.clip)

    def setup(self, stage: str) -> None:
        load_pending_weights(self.clip)  # the processes that did not run prepare_data
        trainer = self.attached_trainer
        datamodule = trainer.datamodule if trainer is not None else None
        spec = self.resolve_spec(getattr(datamodule, "vocabularies", {}) or {})
        if stage == "fit" and self.method.trains and self.method.needs_retain_images \
                and not getattr(datamodule, "provides_retain_images", False):
            raise ConfigError(
                f"method {type(self.method).__name__} trains on retain images too, but the DataModule "
                f"{type(datamodule).__name__} serves none: use RealForgetDataModule with retain_images_per_class > 0"
            )
        self.method.setup(self)
        check = getattr(datamodule, "check_forget_spec", None)
        if callable(check):  # e.g. a descriptions file must describe every forgotten class
            check(spec)
        if self.evaluation_runner is None:
            self.evaluation_runner = EvaluationRunner(self.evaluation, self)
        if getattr(datamodule, "eval_datasets", None) is not None:
            self.evaluation_runner.prepare(datamodule)  # bad settings fail here, before any run
        if stage == "fit":
            self.synthetic_metric = ZeroShotAccuracy(len(spec.vocabulary.classnames), spec.forget_indices)
            rank_zero_info(f"Forgetting {list(spec.names)} among {len(spec.vocabulary.classnames)} classes"
                           + (f" of {spec.dataset!r}" if spec.dataset else "")
                           + f" with {type(self.method).__name__}")

    def on_fit_start(self) -> None:
        self.train()  # Lightning 2.6 no longer switches modes at fit start; BatchNorm stays eval
        if not self.method.trains:
            # Runs after the callbacks' on_fit_start, so the report has measured "before". The edit is
            # made once, on rank 0 (one writer of any cache it keeps), and every rank takes its weights.
            def edit() -> tuple[dict[str, Any], dict[str, float]]:
                with torch.no_grad():
                    return self.method.apply(self), dict(self.method.timings)

            self.method_report, timings = on_rank_zero(self.trainer, edit)
            self.method.timings.update(timings)
            share_weights_from_rank_zero(self.trainer, self.model)
            self.trainer.limit_train_batches = 0  # nothing to train: the fit loop ends at once

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["unlearning_method"] = self.method.state_dict()  # e.g. EMMN's learned noise

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.clip.weights_pending = None  # the checkpoint's state dict holds the weights
        self.method.load_state_dict(checkpoint.get("unlearning_method") or {})

    def configure_optimizers(self) -> Optional[torch.optim.Optimizer]:
        if not self.method.trains:
            return None
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.optimizer_factory is not None:
            return self.optimizer_factory(params)
        hp = self.hparams
        return torch.optim.Adam(params, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps, weight_decay=hp.weight_decay)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.method.training_step(self, batch)
        size = len(batch["image"])
        self.log("train/loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        self.log("sigma", self.sigma, prog_bar=True, batch_size=size)
        return loss

    # --- validation: forget-set accuracy (fit) or evaluation datasets (validate/test) ----------
    def on_validation_epoch_start(self) -> None:
        self._epoch_encodings = StateEncodings(self)  # the weights stay as they are until the epoch ends
        self._captured = {}

    def on_test_epoch_start(self) -> None:
        self._epoch_encodings = StateEncodings(self)
        self._captured = {}

    def _encodings(self) -> StateEncodings:
        """This validation/test epoch's encodings (made here if a step runs outside an epoch)."""
        if self._epoch_encodings is None:
            self._epoch_encodings = StateEncodings(self)
        return self._epoch_encodings

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if isinstance(batch, dict):
            self._forget_set_step(batch)
        else:
            self._evaluation_step(batch, dataloader_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation_step(batch, dataloader_idx)

    def _forget_set_step(self, batch: dict[str, Any]) -> None:
        assert self.synthetic_metric is not None
        embeddings = self._encodings().vocabulary_embeddings()
        self.synthetic_metric.update(zero_shot_logits(self.encode_image(batch["image"]), embeddings), batch["label"])

    def _eval_datasets(self) -> dict[str, Any]:
        return dict(getattr(self.trainer.datamodule, "eval_datasets", {}) or {})

    def _evaluation_step(self, batch: Sequence[torch.Tensor], dataloader_idx: int) -> None:
        names = list(self._eval_datasets())
        name = names[dataloader_idx]
        if name not in self.eval_metrics:
            dataset = self._eval_datasets()[name]
            self.eval_metrics[name] = ZeroShotAccuracy(len(dataset.classnames), self.spec.targets.get(name, ()))
            self.eval_metrics[name].to(self.device)
        embeddings = self._encodings().dataset_embeddings(self._eval_datasets()[name])
        images, labels = batch[0], batch[1]
        features = self.encode_image(images)
        self.eval_metrics[name].update(zero_shot_logits(features, embeddings), labels)
        # kept for the evaluation suite: the features of this model state are computed once
        self._captured.setdefault(name, []).append((features.detach().float().cpu(), labels.detach().cpu()))

    def _log_evaluation(self) -> None:
        for name, metric in self.eval_metrics.items():
            result = metric.compute()
            metric.reset()
            for key in ("accuracy", "target", "other_classes"):
                if result[key] is not None:
                    self.log(f"eval/{name}/{key}", result[key], add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        if self.synthetic_metric is not None and self.synthetic_metric.update_count:
            self.log("forget/synthetic_acc", self.synthetic_metric.compute()["accuracy"], prog_bar=True)
            self.synthetic_metric.reset()
        self._log_evaluation()
        if self.trainer.state.fn != "fit":
            self._run_suite()
        self._epoch_encodings = None  # the weights may change after the epoch

    def on_test_epoch_end(self) -> None:
        self._log_evaluation()
        self._run_suite()
        self._epoch_encodings = None

    def _captured_shards(self) -> Optional[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """The evaluation loop's features, if they are this rank's whole shard of every dataset
        (images ``rank, rank + W, ...``: the DataModule's ``ShardSampler``; no batch limit); else
        None (the suite encodes its own exact shards)."""
        datasets = self._eval_datasets()
        if set(self._captured) != set(datasets):
            return None
        shards = {name: (torch.cat([f for f, _ in parts]), torch.cat([y for _, y in parts]))
                  for name, parts in self._captured.items()}
        rank, world = self.global_rank, self.world_size
        if any(len(shards[name][1]) != len(range(rank, len(ds), world)) for name, ds in datasets.items()):
            return None
        return shards

    def _run_suite(self) -> None:
        """validate/test: the evaluation suite on the given weights (every rank)."""
        if self.evaluation_runner is None or not self._eval_datasets():
            return
        shards, self._captured = self._captured_shards(), {}
        # Exported weights carry the target accuracy before unlearning: the relearning goal's base.
        reference = exported_reference(self.clip.weights_file)
        self.evaluation_results = {"after": self.evaluation_runner.run("after", self.trainer, shards,
                                                                       reference_target=reference,
                                                                       encodings=self._encodings())}

    def real_target_probabilities(self) -> dict[int, float]:
        """Vocabulary index -> median class probability of each forgotten class's real images under
        the current weights, if ``evaluation.synthesis_target_from_real`` is set (else empty)."""
        trainer = self.attached_trainer
        if self.evaluation_runner is None or trainer is None:
            return {}
        return self.evaluation_runner.real_target_probabilities(trainer.datamodule)

    # --- evaluation outside Lightning's loops (the report's before/after) ----------------------
    @torch.no_grad()
    def template_embeddings(self, classnames: Sequence[str], template: str) -> torch.Tensor:
        """Normalised class embeddings ``[C, D]`` of ``classnames`` under one template (on the model's device)."""
        tokens = tokenize_classes(self.tokenizer, classnames, [template]).to(self.device)
        with eval_mode(self.model):
            return class_embeddings(self.model.encode_text, tokens)

    @torch.no_grad()
    def dataset_embeddings(self, dataset: Any) -> torch.Tensor:
        """Class embeddings of an evaluation dataset under its evaluation prompt (its first template)."""
        return self.template_embeddings(dataset.classnames, dataset.templates[0])

    @torch.no_grad()
    def evaluate_datasets(
        self,
        loaders: Mapping[str, DataLoader],
        shards: Optional[dict[str, tuple[torch.Tensor, torch.Tensor]]] = None,
        encodings: Optional[StateEncodings] = None,
    ) -> dict[str, dict[str, Any]]:
        """Zero-shot accuracy per dataset, split into target and other classes.

        ``loaders`` yield each rank's shard of every dataset (no padding, so counts are exact);
        the counts are summed across ranks. Call it on every rank. If ``shards`` is a dict, it
        receives this rank's raw image features and labels per dataset (CPU), for the evaluation
        suite to reuse; ``encodings`` are this model state's (the class embeddings are shared with
        whatever else measures the state; None: encoded here).
        """
        encodings = encodings if encodings is not None else StateEncodings(self)
        results = {}
        with eval_mode(self):
            for name, loader in loaders.items():
                dataset = loader.dataset.dataset if hasattr(loader.dataset, "dataset") else loader.dataset
                metric = ZeroShotAccuracy(len(dataset.classnames), self.spec.targets.get(name, ())).to(self.device)
                embeddings = encodings.dataset_embeddings(dataset)
                kept: list[tuple[torch.Tensor, torch.Tensor]] = []
                for images, labels in loader:
                    features = self.encode_image(images.to(self.device))
                    metric.update(zero_shot_logits(features, embeddings), labels.to(self.device))
                    if shards is not None:
                        kept.append((features.float().cpu(), labels.cpu()))
                results[name] = metric.compute()
                if shards is not None:
                    shards[name] = ((torch.cat([f for f, _ in kept]), torch.cat([y for _, y in kept])) if kept
                                    else (torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)))
        return results

    @torch.no_grad()
    def synthetic_accuracy(
        self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256,
        encodings: Optional[StateEncodings] = None,
    ) -> float:
        """Zero-shot accuracy of the current model on forget images, synthetic or real, among the
        spec's vocabulary (template-averaged prompts; no Lightning loop, no sync: every rank holds
        all the images). ``encodings``: this model state's, shared with whatever else measures it
        (None: encoded here)."""
        encodings = encodings if encodings is not None else StateEncodings(self)
        embeddings = encodings.vocabulary_embeddings()
        metric = ZeroShotAccuracy(len(self.spec.vocabulary.classnames), sync_on_compute=False).to(self.device)
        for start, features in zip(range(0, len(images), batch_size), encodings.image_features(images, batch_size)):
            metric.update(zero_shot_logits(features, embeddings), labels[start : start + batch_size].to(self.device))
        return metric.compute()["accuracy"] if len(images) else 0.0


__all__ = ["UnlearningModule", "eval_mode"]
