"""The evaluation suite: its settings (:class:`EvaluationSuite`) and what runs it (:class:`EvaluationRunner`).

One :class:`EvaluationRunner` per :class:`~lightning_unlearn.UnlearningModule` measures one model
state at a time (``before``/``after`` unlearning in ``fit``; the given model in
``validate``/``test``): it computes the image features of every evaluation dataset once and hands
them to every section (templates, retrieval, verification, probes, the inversion attack).
:func:`assemble` turns the states into the report's ``evaluation`` section, whose shape does not
depend on the method.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence, Union

import torch
from lightning.pytorch.utilities import rank_zero_info

from lightning_unlearn.core._distributed import on_rank_zero
from lightning_unlearn.core._validation import (
    _choice_validation,
    _number_list_validation,
    _positive_int_validation,
    _positive_number_validation,
    _templates_validation,
    _unit_interval_validation,
)
from lightning_unlearn.core.errors import ConfigError, UnlearnError
from lightning_unlearn.datasets.base import dataset_labels
from lightning_unlearn.evaluation import probes, retrieval, templates as tpl
from lightning_unlearn.evaluation.descriptions import descriptions_for, load_descriptions
from lightning_unlearn.evaluation.encodings import StateEncodings
from lightning_unlearn.evaluation.features import DatasetFeatures, compute_features, encode_images, gather_features
from lightning_unlearn.evaluation.verification import image_set_result
from lightning_unlearn.core.names import class_key

#: Key of the exported weights' metadata that holds the target accuracy before unlearning (the
#: relearning probe's reference when ``validate`` runs on those weights).
REFERENCE_METADATA_KEY = "lightning_unlearn.target_before"


@dataclass
class EvaluationSuite:
    """What the evaluation suite measures (``UnlearningModule(evaluation=...)``).

    Every section runs on the image features of all evaluation datasets, computed once per model
    state. In a config::

        model:
          init_args:
            evaluation:
              templates: ["We can see a {} in this image", "This is a representation of {}"]
              verification_images: 8
              linear_probe: true

    Args:
        templates: evaluation templates, each with one ``{}``, reported one by one and as a mean
            (target and other classes, every dataset). None: each dataset's own evaluation
            template (reported under the forgotten classes' dataset's template). The paper's
            Table 9 set is ``lightning_unlearn.evaluation.PAPER_TEMPLATES``.
        retrieval: measure retrieval precision@k, image from text and image from image, over every
            test image of every evaluation dataset.
        retrieval_k: the ``k`` of precision@k (positive ints).
        retrieval_other_queries: how many images of other classes are image queries (a seeded
            sample), besides every test image of the forgotten classes.
        verification_images: real images per forgotten class, from ``verification_split``, whose
            class probability and accuracy are reported next to the synthetic images' (the
            paper's section 5.6). 0: off.
        verification_split: split the real images come from; never the test split.
        synthesis_target_from_real: set the synthesis target probability of each forgotten class
            to the median probability its real images get from the original model (clipped to
            ``[min_probability, 0.99]``); needs ``verification_images``.
        linear_probe: cross-validated logistic-regression probe on frozen image features, the
            forgotten classes against the rest of their dataset, before and after.
        probe_folds: cross-validation folds of the linear probe.
        relearn_steps: fine-tuning steps of the relearning probe (0: off): a copy of the model
            is fine-tuned on ``relearn_images`` real images per forgotten class until their test
            accuracy is back to ``relearn_goal``.
        relearn_images: real images per forgotten class the relearning probe trains on (from
            ``verification_split``).
        relearn_lr: Adam learning rate of the relearning probe.
        relearn_goal: test accuracy of the forgotten classes the relearning must reach. None: half
            of their accuracy before unlearning (in ``validate``/``test``: half of the value
            recorded in the exported weights, when given such weights).
        class_mean_probe: nearest-class-mean probe on frozen image features: every class's mean
            from ``class_mean_images`` images per class of ``verification_split``, each test image
            given the nearest mean's class; balanced accuracy of the forgotten classes against the
            rest, before and after (``recovery.nearest_class_mean``).
        class_mean_images: images per class (every class of the forgotten classes' dataset) the
            class means are taken from.
        inversion: the textual-inversion attack (``recovery.inversion``), before and after: with
            the model frozen, learn ``inversion_words`` word embeddings per forgotten class in place
            of the class word of its dataset's evaluation template, from ``inversion_images`` real
            images of the class (``verification_split``, never the test split), by Adam on their
            zero-shot cross-entropy; report the test accuracy of the forgotten classes with the
            learned words, and of the other classes with them in the vocabulary. open_clip text
            towers only (others: skipped, with the reason in the report).
        inversion_words: pseudo-words per forgotten class.
        inversion_images: real images per forgotten class the attack learns from.
        inversion_steps: Adam steps of the attack.
        inversion_lr: Adam learning rate of the attack.
        inversion_seed: seed of the starting words (rows of the token embedding drawn at random).
        paraphrases: prompts that stand in for each forgotten class at evaluation (synonyms,
            descriptions; each a complete prompt): class name -> list of prompts, or a
            descriptions JSON file (path, or a packaged name: ``demo-paraphrases``, paraphrases
            of every demo class that never say the class word; ``demo``, descriptions that do).
            Each forgotten class is measured under each of its prompts; the prompts a method put
            into its own forget bank (the edit's ``paraphrases``) are marked, and
            ``recovery.paraphrases.held_out`` averages the others only. Every other class of the
            forgotten classes' dataset that the file also describes is measured under its own
            prompts (``recovery.paraphrases.retained``): did the method harm the language of
            the classes it keeps?
        plots: write PNG plots (``plots/*.png`` next to the report) and embed them in
            ``report.md``: samples of the forget images, accuracy per dataset and template, the
            escalation trace and retrieval precision@k. Off by default (the output folder then
            holds only the report and the weights); the demo config turns them on.
        seed: seed of every draw (real images, query sample, probe folds).
    """

    templates: Optional[list[str]] = None
    retrieval: bool = True
    retrieval_k: list[int] = field(default_factory=lambda: [1, 5, 10])
    retrieval_other_queries: int = 100
    verification_images: int = 0
    verification_split: Literal["train", "val"] = "train"
    synthesis_target_from_real: bool = False
    linear_probe: bool = False
    probe_folds: int = 2
    relearn_steps: int = 0
    relearn_images: int = 16
    relearn_lr: float = 1e-5
    relearn_goal: Optional[float] = None
    class_mean_probe: bool = False
    class_mean_images: int = 16
    inversion: bool = False
    inversion_words: int = 1
    inversion_images: int = 16
    inversion_steps: int = 300
    inversion_lr: float = 1e-2
    inversion_seed: int = 0
    paraphrases: Optional[Union[str, dict[str, list[str]]]] = None
    plots: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        """Check every field (:class:`~lightning_unlearn.core.errors.ConfigError` naming it and the value)."""
        if self.templates is not None:
            _templates_validation("evaluation.templates", self.templates)
            self.templates = list(self.templates)
        _number_list_validation("evaluation.retrieval_k", self.retrieval_k, positive_ints=True)
        self.retrieval_k = sorted(set(self.retrieval_k))
        _positive_int_validation("evaluation.retrieval_other_queries", self.retrieval_other_queries, allow_zero=True)
        _positive_int_validation("evaluation.verification_images", self.verification_images, allow_zero=True)
        _choice_validation("evaluation.verification_split", self.verification_split, ("train", "val"))
        if self.synthesis_target_from_real and not self.verification_images:
            raise ConfigError("evaluation.synthesis_target_from_real needs real images: set evaluation.verification_images")
        _positive_int_validation("evaluation.probe_folds", self.probe_folds)
        if self.probe_folds < 2:
            raise ConfigError(f"evaluation.probe_folds must be >= 2 (cross-validation), got {self.probe_folds!r}")
        _positive_int_validation("evaluation.relearn_steps", self.relearn_steps, allow_zero=True)
        _positive_int_validation("evaluation.relearn_images", self.relearn_images)
        _positive_number_validation("evaluation.relearn_lr", self.relearn_lr)
        if self.relearn_goal is not None:
            _unit_interval_validation("evaluation.relearn_goal", self.relearn_goal, open_low=True)
        _positive_int_validation("evaluation.class_mean_images", self.class_mean_images)
        _positive_int_validation("evaluation.inversion_words", self.inversion_words)
        _positive_int_validation("evaluation.inversion_images", self.inversion_images)
        _positive_int_validation("evaluation.inversion_steps", self.inversion_steps)
        _positive_number_validation("evaluation.inversion_lr", self.inversion_lr)
        if not isinstance(self.inversion_seed, int) or isinstance(self.inversion_seed, bool):
            raise ConfigError(f"evaluation.inversion_seed must be an int, got {self.inversion_seed!r}")
        for flag in ("retrieval", "synthesis_target_from_real", "linear_probe", "class_mean_probe", "inversion",
                     "plots"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"evaluation.{flag} must be true or false, got {getattr(self, flag)!r}")
        # Read (and check) a descriptions file now, so a bad one fails before any run.
        self._paraphrases = load_descriptions(self.paraphrases) if self.paraphrases is not None else None

    @property
    def real_images_per_class(self) -> int:
        """Real images per forgotten class the suite needs (0: none)."""
        return max(self.verification_images, self.relearn_images if self.relearn_steps else 0,
                   self.inversion_images if self.inversion else 0)

    def describe(self) -> dict[str, Any]:
        """The settings as a plain dict (hyperparameters, reports)."""
        return asdict(self)


def as_suite(value: Union[None, EvaluationSuite, Mapping[str, Any]]) -> EvaluationSuite:
    """An :class:`EvaluationSuite` from None (the defaults), a suite, or its dict (as stored in hparams)."""
    if value is None:
        return EvaluationSuite()
    if isinstance(value, EvaluationSuite):
        return value
    if isinstance(value, Mapping):
        return EvaluationSuite(**dict(value))
    raise ConfigError(f"evaluation must be an EvaluationSuite or a dict of its fields, got {type(value).__name__}")


def exported_reference(pretrained: Optional[str]) -> Optional[float]:
    """The target accuracy before unlearning recorded in exported weights (None if absent)."""
    if not pretrained or not str(pretrained).endswith(".safetensors") or not Path(pretrained).is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(pretrained), framework="pt") as handle:
            value = (handle.metadata() or {}).get(REFERENCE_METADATA_KEY)
        return None if value is None else float(json.loads(value))
    except Exception:  # a foreign or unreadable header: no reference, the probe reports no goal
        return None


class _Timer:
    """Seconds per section of one state."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._last, 4)
        self._last = now


class EvaluationRunner:
    """Runs an :class:`EvaluationSuite` for one :class:`~lightning_unlearn.UnlearningModule`.

    :meth:`prepare` (from the module's ``setup``) checks the suite against the resolved forget
    spec and the DataModule and reads the real images it needs, so bad settings fail before any
    run; :meth:`run` measures the current weights. Call :meth:`run` on every rank: the features
    are gathered across ranks and every rank computes the same figures.
    """

    def __init__(self, suite: EvaluationSuite, module: Any) -> None:
        self.suite = suite
        self.module = module
        self.real_dataset: Optional[str] = None
        self.real_images: Optional[torch.Tensor] = None
        self.real_labels: Optional[torch.Tensor] = None  # dataset labels
        self.real_split: Optional[str] = None  # the split they come from
        self.paraphrases: dict[str, list[str]] = {}
        self._eval_images: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self.mean_images: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # the class-mean probe's (images, labels)
        self._prepared_for: Optional[int] = None
        self._read_seconds: Optional[float] = None  # reading the real images, reported by the next run

    # --- checks and inputs that do not depend on the weights ----------------------------------
    def target_dataset(self, datamodule: Any) -> Optional[str]:
        """The evaluation dataset holding the forgotten classes (the forget dataset if it is one)."""
        spec = self.module.spec
        names = list(getattr(datamodule, "roots", {}) or getattr(datamodule, "eval_datasets", {}) or {})
        if spec.dataset in names and spec.targets.get(spec.dataset):
            return spec.dataset
        return next((name for name in names if spec.targets.get(name)), None)

    def prepare(self, datamodule: Any) -> None:
        """Check the suite against the forget spec and ``datamodule``; read the real images.

        Raises:
            ConfigError: paraphrases lack a forgotten class; real images are asked for but no
                evaluation dataset holds the forgotten classes, or it has no such split.
        """
        spec = self.module.spec
        if self.suite._paraphrases is not None:
            self.paraphrases = descriptions_for(self.suite._paraphrases, spec.names, "evaluation.paraphrases")
        if self._prepared_for != id(datamodule):  # images read for another DataModule do not apply
            self._eval_images = None
            self.real_dataset = self.real_images = self.real_labels = self.mean_images = None
        self._prepared_for = id(datamodule)
        start = time.perf_counter()
        read = self._read_real_images(datamodule)
        if self.suite.class_mean_probe and self.mean_images is None:
            self.mean_images, read = self._read_class_means_images(datamodule), True
        if read:  # reported with the next state
            self._read_seconds = time.perf_counter() - start

    def _read_real_images(self, datamodule: Any) -> bool:
        """Read the forgotten classes' real images the suite needs (verification, relearning,
        inversion); False if there was nothing to read."""
        spec = self.module.spec
        per_class = self.suite.real_images_per_class
        if not per_class or self.real_images is not None:
            return False
        dataset = self.target_dataset(datamodule)
        if dataset is None or not hasattr(datamodule, "class_images"):
            raise ConfigError(
                f"evaluation.verification_images / relearn_steps / inversion need real images of {list(spec.names)}, "
                f"but no evaluation dataset holds them ({list(getattr(datamodule, 'roots', {}) or [])})"
            )
        split = self.verification_split(datamodule)
        try:
            images, labels = datamodule.class_images(dataset, list(spec.targets[dataset]), split, per_class,
                                                     seed=self.suite.seed)
        except UnlearnError as err:
            raise ConfigError(
                f"evaluation needs {per_class} real images per forgotten class from the {split!r} "
                f"split of {dataset!r} (a non-test split), which cannot be read: {err}"
            ) from err
        self.real_dataset, self.real_images, self.real_labels, self.real_split = dataset, images, labels, split
        return True

    def _read_class_means_images(self, datamodule: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``class_mean_images`` images of every class of the forgotten classes' dataset, from the
        real-image split (the class-mean probe's means)."""
        dataset = self.target_dataset(datamodule)
        if dataset is None or not hasattr(datamodule, "class_images"):
            raise ConfigError(
                f"evaluation.class_mean_probe needs real images of every class of the dataset holding "
                f"{list(self.module.spec.names)}, but no evaluation dataset holds them "
                f"({list(getattr(datamodule, 'roots', {}) or [])})"
            )
        split = self.verification_split(datamodule)
        labels = range(len(datamodule.eval_datasets[dataset].classnames))
        try:
            return datamodule.class_images(dataset, list(labels), split, self.suite.class_mean_images,
                                           seed=self.suite.seed)
        except UnlearnError as err:
            raise ConfigError(
                f"evaluation.class_mean_probe needs {self.suite.class_mean_images} images per class from the "
                f"{split!r} split of {dataset!r} (a non-test split), which cannot be read: {err}"
            ) from err

    def verification_split(self, datamodule: Any) -> str:
        """``verification_split``, unless the method trains on real images of that split: then the
        other non-test split, so that the check never looks at an image the method was fed."""
        split = self.suite.verification_split
        if getattr(datamodule, "real_forget_images", False) and getattr(datamodule, "forget_split", None) == split:
            other = "val" if split == "train" else "train"
            rank_zero_info(f"Evaluation: the method trains on real {split!r} images; real-image checks use {other!r}")
            return other
        return split

    def _first_per_class(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``count`` real images of each class (``class_images`` keeps a seeded order)."""
        assert self.real_images is not None and self.real_labels is not None
        seen: dict[int, int] = {}
        keep = []
        for i, label in enumerate(self.real_labels.tolist()):
            seen[label] = seen.get(label, 0) + 1
            if seen[label] <= count:
                keep.append(i)
        index = torch.tensor(keep, dtype=torch.long)
        return self.real_images[index], self.real_labels[index]

    def vocabulary_labels(self, dataset_labels: torch.Tensor, dataset: str, datamodule: Any) -> torch.Tensor:
        """Dataset labels -> indices in the forget vocabulary (matched by class name)."""
        classnames = datamodule.eval_datasets[dataset].classnames
        index = self.module.spec.vocabulary.index()
        return torch.tensor([index[class_key(classnames[int(label)])] for label in dataset_labels], dtype=torch.long)

    # --- one model state -----------------------------------------------------------------------
    def features(self, trainer: Any) -> dict[str, DatasetFeatures]:
        """Image features of every evaluation dataset for the current weights (every rank)."""
        dm = trainer.datamodule
        return compute_features(self.module.encode_image, dm.evaluation_loaders(trainer.global_rank, trainer.world_size),
                                self.module.device, trainer.world_size)

    def run(
        self,
        state: str,
        trainer: Any,
        shards: Optional[Mapping[str, tuple[torch.Tensor, torch.Tensor]]] = None,
        synthetic: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        reference_target: Optional[float] = None,
        encodings: Optional[StateEncodings] = None,
    ) -> dict[str, Any]:
        """Measure the current weights; returns this state's figures (plain, JSON-ready).

        Args:
            state: ``before`` or ``after`` (the relearning probe runs in ``after`` only).
            trainer: the running Trainer (its DataModule holds the evaluation datasets).
            shards: this rank's features per dataset if the caller already encoded them
                (``UnlearningModule.evaluate_datasets``/the evaluation loop); else computed here.
            synthetic: ``(images, vocabulary labels)`` of the synthetic forget set, if any.
            reference_target: target accuracy before unlearning (the relearning goal's base).
            encodings: this state's encodings if the caller measured it too (class and vocabulary
                embeddings, the synthetic images' features: each encoded once per state); else
                encoded here.
        """
        from lightning_unlearn.clip.loading import eval_mode

        module, suite, dm = self.module, self.suite, trainer.datamodule
        encodings = encodings if encodings is not None else StateEncodings(module)
        timer = _Timer()
        if self._read_seconds is not None:  # read at setup, once: counted with the first state
            timer.seconds["real_images"] = round(self._read_seconds, 4)
            self._read_seconds = None
        # Lightning's evaluation loops run in inference mode; the probes need autograd.
        with torch.inference_mode(False), eval_mode(module):
            if shards is None:
                features = self.features(trainer)
            else:
                features = gather_features({k: (f.clone(), y.clone()) for k, (f, y) in shards.items()}, trainer.world_size)
            timer.lap("features")
            result: dict[str, Any] = {}
            own = self._templates(result, features, dm, encodings, timer)
            if suite.retrieval:
                self._retrieval(result, features, own, dm, timer)
            if suite.verification_images:
                self._verification(result, dm, synthetic, encodings, timer)
            dataset = self.target_dataset(dm)
            # The probes train (a logistic regression, a copy of the model, the attack's words): once,
            # on rank 0, and every rank gets the figures, so nothing differs between ranks and no
            # work is repeated.
            if suite.linear_probe and dataset is not None:
                positive = torch.isin(features[dataset].labels, torch.tensor(module.spec.targets[dataset]))
                result["linear_probe"] = on_rank_zero(trainer, lambda: probes.linear_probe(
                    features[dataset].features, positive, suite.probe_folds, suite.seed))
                timer.lap("linear_probe")
            if suite.class_mean_probe and dataset is not None and self.mean_images is not None:
                result["nearest_class_mean"] = on_rank_zero(trainer, lambda: self._class_mean(features[dataset], dataset))
                timer.lap("nearest_class_mean")
            if suite.inversion and dataset is not None:
                result["inversion"] = on_rank_zero(trainer, lambda: self._inversion(
                    state, trainer, features[dataset], own[dataset], dataset, dm))
                timer.lap("inversion")
            if suite.relearn_steps and state == "after" and dataset is not None:
                def relearn() -> dict[str, Any]:
                    section: dict[str, Any] = {}
                    self._relearn(section, dataset, dm, reference_target, _Timer())
                    return section

                result.update(on_rank_zero(trainer, relearn))
                timer.lap("relearn")
            if self.paraphrases and dataset is not None:
                self._paraphrases(result, features[dataset], own[dataset], dataset, dm, timer)
        result["seconds"] = timer.seconds
        return result

    @staticmethod
    def _encode_text(encodings: StateEncodings, classnames: Sequence[str], template: str) -> torch.Tensor:
        """Class embeddings under one template (CPU, float32), encoded once per state: a dataset's
        own template is also what its zero-shot accuracy used, and may be among the suite's."""
        embeddings = encodings.class_embeddings(classnames, template).float().cpu()
        # A validate/test loop encodes in inference mode; the sections run outside it.
        return embeddings.clone() if embeddings.is_inference() else embeddings

    def _templates(self, result: dict[str, Any], features: Mapping[str, DatasetFeatures], dm: Any,
                   encodings: StateEncodings, timer: _Timer) -> dict[str, torch.Tensor]:
        """Accuracy per template (and under each dataset's own); returns the own-template class
        embeddings, which retrieval and the paraphrases reuse."""
        spec = self.module.spec
        datasets = dm.eval_datasets
        target = self.target_dataset(dm)  # the forget dataset, or (explicit vocabulary) the one holding the classes
        chunk = getattr(dm, "batch_size", 128)
        own = {name: ds.templates[0] for name, ds in datasets.items()}
        own_embeddings = {name: self._encode_text(encodings, ds.classnames, own[name]) for name, ds in datasets.items()}
        # The datasets' own evaluation template: the main table's figures, from the shared features.
        main = tpl.template_result(features, own_embeddings, spec.targets, target, own, chunk)["datasets"]
        result["accuracy"] = {name: {k: v for k, v in figures.items() if k != "template"} for name, figures in main.items()}
        result["target_dataset"] = target
        keys = tpl.template_key(self.suite.templates, own, target)
        per_template = {}
        for key in keys:
            if self.suite.templates is None:
                embeddings, used = own_embeddings, own
            else:
                embeddings = {name: self._encode_text(encodings, ds.classnames, key) for name, ds in datasets.items()}
                used = {name: key for name in datasets}
            per_template[key] = tpl.template_result(features, embeddings, spec.targets, target, used, chunk)
        result["templates"] = per_template
        result["templates_mean"] = tpl.mean_result(list(per_template.values()))
        timer.lap("templates")
        return own_embeddings

    def _retrieval(self, result: dict[str, Any], features: Mapping[str, DatasetFeatures],
                   own_embeddings: Mapping[str, torch.Tensor], dm: Any, timer: _Timer) -> None:
        classnames = {name: ds.classnames for name, ds in dm.eval_datasets.items()}
        database = retrieval.RetrievalDatabase(features, classnames, self.module.spec.targets)
        ks = self.suite.retrieval_k
        queries = retrieval.image_queries(database, self.suite.retrieval_other_queries, self.suite.seed)
        result["retrieval"] = {
            "database_images": len(database),
            "image_from_text": retrieval.image_from_text(database, own_embeddings, classnames, ks),
            "image_from_image": retrieval.image_from_image(database, queries, ks),
        }
        timer.lap("retrieval")

    def _verification(self, result: dict[str, Any], dm: Any, synthetic: Optional[tuple[torch.Tensor, torch.Tensor]],
                      encodings: StateEncodings, timer: _Timer) -> None:
        module = self.module
        embeddings = encodings.vocabulary_embeddings().float().cpu()
        images, labels = self._first_per_class(self.suite.verification_images)
        real = encode_images(module.encode_image, images, module.device)
        section = {"dataset": self.real_dataset, "split": self.real_split,
                   "real": image_set_result(real, embeddings, self.vocabulary_labels(labels, self.real_dataset, dm))}
        if synthetic is not None:  # the synthetic accuracy of this state encoded them already
            batches = encodings.image_features(synthetic[0])
            made = torch.cat([f.float().cpu() for f in batches]) if batches else torch.zeros(0, 0)
            section["synthetic"] = image_set_result(made, embeddings, synthetic[1])
        result["verification"] = section
        timer.lap("verification")

    def real_target_probabilities(self, datamodule: Any) -> dict[int, float]:
        """Median class probability of each forgotten class's real images under the current weights
        (vocabulary index -> median); empty unless ``synthesis_target_from_real`` is set."""
        if not self.suite.synthesis_target_from_real:
            return {}
        self.prepare(datamodule)
        from lightning_unlearn.evaluation.verification import class_probability
        from lightning_unlearn.clip.loading import eval_mode

        module = self.module
        images, labels = self._first_per_class(self.suite.verification_images)
        vocab = self.vocabulary_labels(labels, self.real_dataset, datamodule)
        with torch.inference_mode(False), eval_mode(module):
            features = encode_images(module.encode_image, images, module.device)
            probability, _ = class_probability(features, module.vocabulary_embeddings().float().cpu(), vocab)
        return {int(c): float(probability[vocab == c].median()) for c in vocab.unique()}

    def _eval_target_images(self, dataset: str, dm: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Test images of the forgotten classes in ``dataset`` (read once)."""
        if self._eval_images is None:
            data = dm.eval_datasets[dataset]
            labels = torch.as_tensor(dataset_labels(data))
            index = torch.nonzero(torch.isin(labels, torch.tensor(self.module.spec.targets[dataset]))).flatten()
            self._eval_images = (torch.stack([data[int(i)][0] for i in index]), labels[index])
        return self._eval_images

    def _relearn(self, result: dict[str, Any], dataset: str, dm: Any, reference: Optional[float], timer: _Timer) -> None:
        from lightning_unlearn.maths.zeroshot import tokenize_classes

        module, suite = self.module, self.suite
        data = dm.eval_datasets[dataset]
        goal = suite.relearn_goal if suite.relearn_goal is not None else (None if reference is None else 0.5 * reference)
        images, labels = self._first_per_class(suite.relearn_images)
        eval_images, eval_labels = self._eval_target_images(dataset, dm)
        tokens = tokenize_classes(module.tokenizer, data.classnames, data.templates[:1])
        trainable = [name for params in module.groups.values() for name, _ in params]
        out = probes.relearn(module.model, trainable, images, labels, tokens, eval_images, eval_labels, goal,
                             suite.relearn_steps, suite.relearn_lr, module.device)
        result["relearn"] = {**out, "reference": reference, "steps": suite.relearn_steps,
                             "images": int(len(images)), "lr": suite.relearn_lr}
        timer.lap("relearn")

    def _class_mean(self, test: DatasetFeatures, dataset: str) -> dict[str, Any]:
        """The nearest-class-mean probe: class means from the real-image split, the test split measured."""
        assert self.mean_images is not None
        images, labels = self.mean_images
        train = encode_images(self.module.encode_image, images, self.module.device)
        return probes.nearest_class_mean_probe(train, labels, test.features, test.labels, self.module.spec.targets[dataset])

    def _inversion(self, state: str, trainer: Any, test: DatasetFeatures, vocabulary: torch.Tensor, dataset: str,
                   dm: Any) -> dict[str, Any]:
        """The textual-inversion attack on the current (frozen) weights, with a progress bar when
        the Trainer shows one."""
        from lightning_unlearn.evaluation.inversion import inversion_attack

        module, suite = self.module, self.suite
        images, labels = self._first_per_class(suite.inversion_images)
        features = encode_images(module.encode_image, images, module.device)
        bar = getattr(trainer, "progress_bar_callback", None)
        template = dm.eval_datasets[dataset].templates[0]
        with _progress_bar(bar is not None and trainer.is_global_zero, suite.inversion_steps,
                           f"Inversion attack ({state})", bar) as update:
            out = inversion_attack(
                module.model, module.tokenizer, template, vocabulary, module.spec.targets[dataset], features, labels,
                test, suite.inversion_words, suite.inversion_steps, suite.inversion_lr, suite.inversion_seed,
                module.device, progress=update, chunk=getattr(dm, "batch_size", 128))
        return {**out, "template": template, "split": self.real_split}

    def _encode_prompts(self, texts: Sequence[str], chunk: int = 256) -> torch.Tensor:
        """Normalised text embeddings ``[len(texts), D]`` of complete prompts (CPU, float32)."""
        module = self.module
        parts = []
        with torch.no_grad():
            for start in range(0, len(texts), chunk):
                tokens = module.tokenizer(list(texts[start : start + chunk])).to(module.device)
                parts.append(torch.nn.functional.normalize(module.model.encode_text(tokens).float().cpu(), dim=-1))
        return torch.cat(parts)

    def paraphrase_bank(self) -> dict[str, list[str]]:
        """The paraphrases the method put into its own forget bank, per forgotten class (empty for
        a method that uses none): a method says so by a ``paraphrases_in_bank()`` method."""
        read = getattr(getattr(self.module, "method", None), "paraphrases_in_bank", None)
        bank = read() if callable(read) else {}
        return {str(name): list(texts) for name, texts in (bank or {}).items()}

    def _paraphrases(self, result: dict[str, Any], data: DatasetFeatures, embeddings: torch.Tensor, dataset: str,
                     dm: Any, timer: _Timer) -> None:
        ds = dm.eval_datasets[dataset]
        label_of = {class_key(name): label for label, name in enumerate(ds.classnames)}
        section = {}
        for name, texts in self.paraphrases.items():
            rows = self._encode_prompts(texts)
            scores = probes.paraphrase_result(data, embeddings, label_of[class_key(name)], rows,
                                              getattr(dm, "batch_size", 128))
            section[name] = dict(zip(texts, scores))
        result["paraphrases"] = section
        result["paraphrase_bank"] = self.paraphrase_bank()
        # The classes kept, each named by its own paraphrases (the rest at the evaluation template).
        forgotten = {class_key(name) for name in self.paraphrases}
        retained = {name: texts for name, texts in (self.suite._paraphrases or {}).items()
                    if class_key(name) in label_of and class_key(name) not in forgotten}
        if retained:
            names = list(retained)
            rows = self._encode_prompts([t for name in names for t in retained[name]])
            out, start = {}, 0
            for name in names:
                count = len(retained[name])
                scores = probes.own_paraphrase_accuracy(data, embeddings, label_of[class_key(name)],
                                                        rows[start : start + count])
                start += count
                out[name] = tpl._mean(scores)
            result["paraphrases_retained"] = out
        timer.lap("paraphrases")


# ------------------------------------------------------------------------------ the report's shape
def _by_state(states: Mapping[str, Mapping[str, Any]], get: Any) -> dict[str, Any]:
    return {state: get(result) for state, result in states.items()}


def assemble(suite: EvaluationSuite, states: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The report's ``evaluation`` section from the figures of each state (``before``/``after``, or
    ``after`` alone in ``validate``/``test``): the state is the last key but one of every figure,
    e.g. ``templates.<template>.after.target``. A section that did not run is None."""
    names = list(states)
    first = states[names[0]]
    out: dict[str, Any] = {"states": names, "target_dataset": first.get("target_dataset"), "settings": suite.describe()}

    templates = {key: _by_state(states, lambda r, k=key: r["templates"][k]) for key in first["templates"]}
    templates["mean"] = _by_state(states, lambda r: r["templates_mean"])
    out["templates"] = templates

    if "retrieval" in first:
        section: dict[str, Any] = {"k": list(suite.retrieval_k), "database_images": first["retrieval"]["database_images"]}
        for kind in ("image_from_text", "image_from_image"):
            section[kind] = {"queries": first["retrieval"][kind]["queries"],
                             **_by_state(states, lambda r, k=kind: {g: r["retrieval"][k][g] for g in ("target", "other_classes")})}
        out["retrieval"] = section
    else:
        out["retrieval"] = None

    if "verification" in first:
        v = first["verification"]
        section = {"dataset": v["dataset"], "split": v["split"], "images_per_class": suite.verification_images}
        for group in ("real", "synthetic"):
            if group not in v:
                section[group] = None
                continue
            section[group] = {
                # section 5.6 compares the distributions on the original model (fit: before unlearning)
                "median_probability": v[group]["probability"]["median"],
                "quartiles": [v[group]["probability"]["q1"], v[group]["probability"]["q3"]],
                "probability": _by_state(states, lambda r, g=group: r["verification"][g]["probability"]),
                "accuracy": _by_state(states, lambda r, g=group: r["verification"][g]["accuracy"]),
            }
        out["verification"] = section
    else:
        out["verification"] = None

    recovery: dict[str, Any] = {}
    if "linear_probe" in first:
        recovery["linear_probe"] = {
            "metric": "balanced_accuracy", "folds": suite.probe_folds,
            **_by_state(states, lambda r: r["linear_probe"]["balanced_accuracy"]),
            "auroc": _by_state(states, lambda r: r["linear_probe"]["auroc"]),
            "images": first["linear_probe"]["images"], "positives": first["linear_probe"]["positives"],
        }
    else:
        recovery["linear_probe"] = None
    if "nearest_class_mean" in first:
        recovery["nearest_class_mean"] = {
            "metric": "balanced_accuracy", "images_per_class": suite.class_mean_images,
            **_by_state(states, lambda r: r["nearest_class_mean"]["balanced_accuracy"]),
            "images": first["nearest_class_mean"]["images"], "positives": first["nearest_class_mean"]["positives"],
            "classes": first["nearest_class_mean"]["classes"],
        }
    else:
        recovery["nearest_class_mean"] = None
    if "inversion" in first:
        keys = ("target", "other_classes", "target_no_attack", "loss")
        recovery["inversion"] = {
            "words": suite.inversion_words, "images_per_class": suite.inversion_images,
            "steps": suite.inversion_steps, "lr": suite.inversion_lr, "seed": suite.inversion_seed,
            "template": first["inversion"].get("template"), "split": first["inversion"].get("split"),
            "skipped": first["inversion"]["skipped"],
            **_by_state(states, lambda r: None if r["inversion"]["skipped"] else {k: r["inversion"][k] for k in keys}),
        }
    else:
        recovery["inversion"] = None
    relearned = [r["relearn"] for r in states.values() if "relearn" in r]
    recovery["relearn"] = relearned[-1] if relearned else None
    if "paraphrases" in first:
        classes = {
            name: {text: _by_state(states, lambda r, n=name, t=text: r["paraphrases"][n][t]) for text in texts}
            for name, texts in first["paraphrases"].items()
        }

        # Paraphrases a method put into its forget bank (in any state: the edit's is known before it runs).
        bank: dict[str, list[str]] = {}
        for result in states.values():
            for name, texts in (result.get("paraphrase_bank") or {}).items():
                bank.setdefault(name, [])
                bank[name] += [t for t in texts if t not in bank[name]]
        in_bank = {class_key(name): set(texts) for name, texts in bank.items()}

        def mean(result: Mapping[str, Any], held_out_only: bool = False) -> dict[str, Optional[float]]:
            scores = [s for name, texts in result["paraphrases"].items() for text, s in texts.items()
                      if not (held_out_only and text in in_bank.get(class_key(name), ()))]
            return {g: tpl._mean([s[g] for s in scores]) for g in ("target", "other_classes")}

        held_out = [text for name, texts in first["paraphrases"].items() for text in texts
                    if text not in in_bank.get(class_key(name), ())]
        section = {"classes": classes, "mean": _by_state(states, mean),
                   "in_bank": {name: [t for t in texts if t in in_bank.get(class_key(name), ())]
                               for name, texts in first["paraphrases"].items()},
                   "held_out": {"prompts": len(held_out),
                                **_by_state(states, lambda r: mean(r, held_out_only=True))}}
        if "paraphrases_retained" in first:
            names = list(first["paraphrases_retained"])
            section["retained"] = {
                "classes": len(names),
                **_by_state(states, lambda r: tpl._mean([r["paraphrases_retained"][n] for n in names])),
                "per_class": {n: _by_state(states, lambda r, n=n: r["paraphrases_retained"][n]) for n in names},
            }
        else:
            section["retained"] = None
        recovery["paraphrases"] = section
    else:
        recovery["paraphrases"] = None
    out["recovery"] = recovery
    out["accuracy"] = _by_state(states, lambda r: r["accuracy"])
    return out


def section_seconds(states: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Time per section and state, as flat ``evaluation/<state>/<section>`` keys for the report's
    ``timings`` (durations stay out of ``evaluation``, whose figures are reproducible)."""
    return {f"evaluation/{state}/{name}": float(seconds)
            for state, result in states.items() for name, seconds in result.get("seconds", {}).items()}


class _progress_bar:
    """A Rich progress bar over a section's steps, or a no-op (yields ``update(done)`` or None).

    Inside a live Rich bar (Lightning's ``RichProgressBar`` at the end of ``fit``) the steps are a
    task of that bar: Rich allows one live display at a time."""

    def __init__(self, enabled: bool, total: int, title: str, bar: Any = None) -> None:
        self.enabled, self.total, self.title, self.bar = enabled, total, title, bar
        self._progress: Any = None
        self._task: Any = None
        self._own = False

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        live = getattr(self.bar, "progress", None)
        if live is not None and getattr(getattr(live, "live", None), "is_started", False):
            self._progress = live
        else:
            self._progress, self._own = Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(),
                                                 MofNCompleteColumn(), TimeElapsedColumn(), transient=True), True
            self._progress.start()
        self._task = self._progress.add_task(self.title, total=self.total)
        return lambda done: self._progress.update(self._task, completed=done)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is None:
            return
        if self._own:
            self._progress.stop()
        else:
            self._progress.remove_task(self._task)
