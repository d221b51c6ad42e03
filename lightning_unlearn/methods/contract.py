"""The method contract: how a model forgets, as one small class chosen in YAML.

``UnlearningModule(method=...)`` holds exactly one :class:`UnlearningMethod`. Everything else is
shared by every method: model loading, eligibility, the forget spec, the callbacks (selection,
stopping, escalation), evaluation, the report and the open_clip export. In a config::

    model:
      class_path: lightning_unlearn.UnlearningModule
      init_args:
        method:
          class_path: lightning_unlearn.methods.MultimodalLipschitz
          init_args: {num_perturbations: 25}

A method that trains implements :meth:`UnlearningMethod.training_step` (the loss of one batch of
forget images; the module's optimiser, the selection callback and the escalation callback do the
rest). A training-free method sets ``trains = False`` and implements :meth:`UnlearningMethod.apply`
(it edits the weights once, at fit start, right after the "before" evaluation); ``fit`` then runs
no optimiser step and still writes the same report and export.
"""

from __future__ import annotations

import importlib
import inspect
from abc import ABC
from collections.abc import Mapping
from typing import Any, Callable, ClassVar, Literal, Optional, Protocol

import lightning.pytorch as pl
import torch
from torch import nn

from lightning_unlearn.core._introspection import init_parameters
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.maths.forget_spec import ForgetSpec

#: What a method learns from: ZS = class names only; semi ZS = real forget images; not ZS = real
#: forget and retain images (the paper's Table 1 column).
ZeroShotType = Literal["ZS", "semi ZS", "not ZS"]


class MethodHost(Protocol):
    """What a method may use of the LightningModule that holds it (``UnlearningModule`` is one).

    The methods see the module through this contract only, so they do not import the module
    (which imports them) and a method can be tried on any object that offers these members.
    """

    model: nn.Module  #: the open_clip model being unlearned
    tokenizer: Callable[..., torch.Tensor]
    spec: ForgetSpec  #: what is forgotten, among which vocabulary (set before ``setup``)
    vocab_tokens: torch.Tensor  #: the vocabulary's token ids ``[C, T, L]``
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    hparams: Any  #: the module's init arguments (e.g. ``noise_seed``, ``forget_prompt``)

    @property
    def sigma(self) -> float: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def global_rank(self) -> int: ...
    @property
    def global_step(self) -> int: ...
    @property
    def world_size(self) -> int: ...
    @property
    def attached_trainer(self) -> Optional[pl.Trainer]: ...

    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...
    def forget_text_features(self, labels: torch.Tensor) -> torch.Tensor: ...
    def vocabulary_embeddings(self) -> torch.Tensor: ...
    def noise_generators(self, indices: torch.Tensor) -> list[torch.Generator]: ...


class UnlearningMethod(ABC):
    """How a model forgets. Subclasses keep every ``__init__`` argument as an attribute of the same
    name (scikit-learn's convention), which is what :attr:`hparams` reads back.

    Class attributes:
        short_name: the name used by ``lightning-unlearn compare --methods`` and in reports.
        trains: False for a training-free method (``apply`` instead of ``training_step``).
        needs_retain_images: True if training batches must also carry real images of other
            classes (``retain_image``/``retain_label``); such a method is "not ZS".

    Calls made by :class:`~lightning_unlearn.UnlearningModule`, in order:

    1. ``setup(module)``: once per ``fit``/``validate``/``test``, after the weights are loaded and
       ``module.spec`` (the resolved :class:`~lightning_unlearn.maths.forget_spec.ForgetSpec`) exists.
    2. ``training_step(module, batch) -> loss`` for every training batch (methods that train).
       ``batch`` is a dict with ``image`` (forget images in the model's normalised space),
       ``label`` (their class index in ``module.spec.vocabulary``) and ``index`` (the image's
       index in the forget set, for reproducible noise), plus ``retain_image``/``retain_label``
       for methods that need retain images.
    3. ``apply(module) -> dict``: training-free methods, once, at fit start; returns the report
       section describing what was done.
    4. ``report_section() -> dict | None``: anything else the report should hold.
    5. ``state_dict()`` / ``load_state_dict(state)``: state a resumed run needs (checkpointed by the module).

    A training-free method's ``apply`` runs on global rank zero only; every rank then takes rank
    zero's weights. A method that trains runs ``training_step`` on every rank (DDP averages the
    gradients): anything it makes once (e.g. learned noise) must be made identically everywhere or
    on rank zero and broadcast.

    A method may record durations in ``self.timings`` (name -> seconds, e.g. ``{"edit": 0.002}``);
    the report adds them to its ``timings``.

    What a method may use of the module is :class:`MethodHost`: ``model``, ``encode_image``,
    ``forget_text_features``, ``vocabulary_embeddings``, ``vocab_tokens``, ``noise_generators``,
    ``sigma``, ``spec``, ``tokenizer``, ``image_size``/``image_mean``/``image_std``, ``hparams``,
    ``attached_trainer`` (the Trainer, or None outside one), ``world_size``, ``global_rank``,
    ``global_step`` and ``device``.

    ``steerable = False`` says the method runs a fixed schedule of its own that callbacks which
    stop or undo epochs (``SyntheticAccuracyStopping``, ``NoiseLayerEscalation``) would break; the
    module then refuses such callbacks when the run starts (:func:`~lightning_unlearn.lightning.wiring.connect_callbacks`).
    """

    short_name: ClassVar[str] = ""
    trains: ClassVar[bool] = True
    needs_retain_images: ClassVar[bool] = False
    steerable: ClassVar[bool] = True
    timings: dict[str, float]

    def __new__(cls, *args: Any, **kwargs: Any) -> "UnlearningMethod":
        self = super().__new__(cls)
        self.timings = {}  # set before __init__, so subclasses need not call super().__init__()
        return self

    def setup(self, module: "MethodHost") -> None:
        """Prepare for a run (default: nothing)."""

    def training_step(self, module: "MethodHost", batch: dict[str, Any]) -> torch.Tensor:
        """The loss of one batch of forget images (methods that train)."""
        raise NotImplementedError(f"{type(self).__name__} trains but does not implement training_step")

    def apply(self, module: "MethodHost") -> dict[str, Any]:
        """Edit the weights once (training-free methods); returns the report section."""
        raise NotImplementedError(f"{type(self).__name__} is training-free but does not implement apply")

    def report_section(self) -> Optional[dict[str, Any]]:
        """Extra report content (default: none)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs of this method's state (tensors, numbers, strings; default: none).
        The module saves it in checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (called on resume, after :meth:`setup`)."""

    def _keep(self, arguments: dict[str, Any]) -> None:
        """Keep each argument of the calling ``__init__`` as the attribute of the same name; call
        it as ``self._keep(locals())`` once the arguments are checked (and converted in place)."""
        caller = inspect.currentframe().f_back.f_code  # type: ignore[union-attr]
        for name in caller.co_varnames[1 : caller.co_argcount + caller.co_kwonlyargcount]:
            setattr(self, name, arguments[name])

    @property
    def hparams(self) -> dict[str, Any]:
        """The ``__init__`` arguments, read back from the attributes of the same name (those of base
        classes too, for a subclass that passes ``**kwargs`` on)."""
        return {name: getattr(self, name) for name in init_parameters(type(self))}

    def describe(self) -> dict[str, Any]:
        """``class_path``/``init_args`` of this method: a plain dict for hyperparameters and reports."""
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(self.hparams)}


def as_method(method: Any) -> UnlearningMethod:
    """``method`` itself, or the method a ``{"class_path": ..., "init_args": {...}}`` dict describes
    (what :meth:`UnlearningMethod.describe` writes into checkpoints).

    Raises:
        ConfigError: anything else, or a class path that is not an importable method.
    """
    if isinstance(method, UnlearningMethod):
        return method
    if isinstance(method, Mapping) and "class_path" in method:
        module_name, _, name = str(method["class_path"]).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError, ValueError) as err:
            raise ConfigError(f"method class {method['class_path']!r} cannot be imported: {err}") from err
        if not (isinstance(cls, type) and issubclass(cls, UnlearningMethod)):
            raise ConfigError(f"method class {method['class_path']!r} is not an UnlearningMethod")
        return cls(**dict(method.get("init_args") or {}))
    raise ConfigError(f"method must be an UnlearningMethod or a class_path/init_args dict, got {type(method).__name__}")


def zero_shot_type(method: UnlearningMethod, real_forget_images: bool) -> ZeroShotType:
    """The Table-1 column: what real data a run used."""
    if method.needs_retain_images:
        return "not ZS"
    return "semi ZS" if real_forget_images else "ZS"
