"""The methods of the paper's comparison by short name: what each runs, on which data.

A :class:`MethodPreset` turns a ``fit`` config (e.g. ``configs/demo.yaml``) into the config of one
method: the method class (keeping the init args of the fit config's method that the new class
also takes, e.g. the perturbation settings), the forget images (synthetic, real, or none for a
training-free method), and the few module, data, trainer and callback changes that define the
method or ablation. ``lightning-unlearn compare`` runs them by name; adding a method is one entry
in the packaged ``presets.yaml`` (:data:`PRESETS`).

Every preset runs through the same ``fit`` path (loading, eligibility, evaluation, report,
export); the zero-shot type each declares is the one the report computes from the method and the
DataModule (``zero_shot_type``).
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import yaml

from lightning_unlearn.core._introspection import init_parameters
from lightning_unlearn.core.errors import ConfigError, UnknownNameError
from lightning_unlearn.methods.contract import ZeroShotType
from lightning_unlearn.core.names import unknown_name_message

ForgetImages = Literal["synthetic", "real", "none"]

#: DataModule of each kind of forget images.
DATA_CLASSES: dict[str, str] = {
    "synthetic": "lightning_unlearn.datamodules.SyntheticForgetDataModule",
    "real": "lightning_unlearn.datamodules.RealForgetDataModule",
    "none": "lightning_unlearn.datamodules.EvaluationDataModule",
}
#: The callbacks that steer a training run (dropped by training-free presets).
TRAINING_CALLBACKS = ("GradientLayerSelection", "SyntheticAccuracyStopping", "NoiseLayerEscalation")

_LIP = "lightning_unlearn.methods.MultimodalLipschitz"


@dataclass(frozen=True)
class MethodPreset:
    """One method of the comparison.

    Attributes:
        name: the short name (``--methods``).
        method: class path of the :class:`~lightning_unlearn.methods.UnlearningMethod`.
        zero_shot: what real data it uses (``ZS``, ``semi ZS``, ``not ZS``).
        description: one line for the docs and ``--help``.
        forget_images: ``synthetic`` (SyntheticForgetDataModule), ``real``
            (RealForgetDataModule: real train-split images of the class) or ``none``
            (EvaluationDataModule: a training-free method).
        method_args: init args of the method (over those carried from the fit config).
        model_args: module init args, e.g. ``{"eligibility": "all"}``.
        data_args: DataModule init args, e.g. ``{"retain_images_per_class": 8}``.
        trainer_args: Trainer init args, e.g. ``{"max_epochs": 1}``.
        drop_callbacks: callbacks removed from the fit config, by class name.
        callback_args: init args per callback class name, e.g.
            ``{"NoiseLayerEscalation": {"k_schedules": None}}``.
        paper: where the paper reports it.
    """

    name: str
    method: str
    zero_shot: ZeroShotType
    description: str
    forget_images: ForgetImages = "synthetic"
    method_args: Mapping[str, Any] = field(default_factory=dict)
    model_args: Mapping[str, Any] = field(default_factory=dict)
    data_args: Mapping[str, Any] = field(default_factory=dict)
    trainer_args: Mapping[str, Any] = field(default_factory=dict)
    drop_callbacks: Sequence[str] = ()
    callback_args: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    paper: str = ""

    @property
    def uses_real_images(self) -> bool:
        """Whether the run reads real train-split images (the forget images, and retain images)."""
        return self.forget_images == "real"


def _load_presets() -> dict[str, MethodPreset]:
    """The entries of the packaged ``presets.yaml`` (data, so adding a method is one entry there)."""
    entries = yaml.safe_load((Path(__file__).resolve().parent / "presets.yaml").read_text(encoding="utf-8"))
    presets = {}
    for name, entry in entries.items():
        for key in ("drop_callbacks",):
            if key in entry:
                entry[key] = tuple(entry[key])
        if entry.get("drop_callbacks") == ("training",):  # shorthand: every callback that steers training
            entry["drop_callbacks"] = TRAINING_CALLBACKS
        presets[name] = MethodPreset(name=name, **entry)
    return presets


#: Short name -> preset, in the paper's order.
PRESETS: dict[str, MethodPreset] = _load_presets()


def get_preset(name: str) -> MethodPreset:
    """The preset called ``name``.

    Raises:
        UnknownNameError: no such preset (close matches in the message).
    """
    if name not in PRESETS:
        raise UnknownNameError(unknown_name_message("method", name, list(PRESETS), show_all=20))
    return PRESETS[name]


def import_class(class_path: str, what: str = "class") -> type:
    """The class at ``module.Class``.

    Raises:
        ConfigError: it cannot be imported (e.g. a method this installation does not have yet).
    """
    module_name, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{what} {class_path!r} is not available in this installation ({err})") from err


def accepted_args(cls: type, args: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``args`` that ``cls`` takes by name (see :func:`init_parameters`)."""
    names = init_parameters(cls)
    return {k: v for k, v in args.items() if k in names}


def _class_name(entry: Any) -> str:
    return str(entry.get("class_path", "")).rpartition(".")[2] if isinstance(entry, Mapping) else ""


def _switch_class(section: dict[str, Any], class_path: str) -> dict[str, Any]:
    """``section`` (``class_path``/``init_args``) as an instance of ``class_path``, keeping the
    init args the new class takes."""
    if section.get("class_path") == class_path:
        return copy.deepcopy(section)
    cls = import_class(class_path)
    return {"class_path": class_path, "init_args": accepted_args(cls, section.get("init_args") or {})}


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``config[a][b]...`` for ``key = "a.b..."``; in a list of ``class_path`` entries (e.g.
    ``trainer.callbacks``) a segment names the entry by class name
    (``trainer.callbacks.NoiseLayerEscalation.init_args.positions``).

    Raises:
        ConfigError: a list has no entry of that class, or a segment crosses a plain value.
    """
    node: Any = config
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            matches = [entry for entry in node if _class_name(entry) == part]
            if not matches:
                names = [_class_name(entry) for entry in node]
                raise ConfigError(f"override {key!r}: no {part!r} in {'.'.join(parts[:i])} (has {names})")
            if last:
                raise ConfigError(f"override {key!r} must name a field of {part!r}, not the entry itself")
            node = matches[0]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {'.'.join(parts[:i])!r} is not a mapping")
        if last:
            node[part] = value
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]


def apply_preset(fit_config: Mapping[str, Any], preset: MethodPreset, keep_forget_set: bool = False) -> dict[str, Any]:
    """The fit config of ``preset``: ``fit_config`` with the preset's method, data and changes.

    ``keep_forget_set``: a training-free preset keeps the fit config's forget DataModule, so its
    run also measures the forget set (it does not train on it).

    Raises:
        ConfigError: the fit config lacks a ``model``/``data`` section, or a class cannot be imported.
    """
    config = copy.deepcopy(dict(fit_config))
    for section in ("model", "data"):
        if not isinstance(config.get(section), dict) or "class_path" not in config[section]:
            raise ConfigError(f"the fit config has no {section!r} section with a class_path")
    model_args = config["model"].setdefault("init_args", {})
    method = model_args.get("method") or {"class_path": _LIP, "init_args": {}}
    method = _switch_class(method if isinstance(method, dict) else {"class_path": str(method)}, preset.method)
    method["init_args"] = {**method.get("init_args", {}), **preset.method_args}
    model_args["method"] = method
    model_args.update(preset.model_args)
    keep = keep_forget_set and preset.forget_images == "none"
    data = _switch_class(config["data"], DATA_CLASSES[preset.forget_images]) \
        if not keep and _needs_data_switch(config["data"], preset) else copy.deepcopy(config["data"])
    data.setdefault("init_args", {}).update(preset.data_args)
    config["data"] = data
    trainer = config.setdefault("trainer", {}) or {}
    config["trainer"] = trainer
    trainer.update(preset.trainer_args)
    callbacks = [cb for cb in trainer.get("callbacks") or [] if _class_name(cb) not in preset.drop_callbacks]
    for cb in callbacks:
        extra = preset.callback_args.get(_class_name(cb))
        if extra:
            cb.setdefault("init_args", {}).update(extra)
    trainer["callbacks"] = callbacks
    return config


def _needs_data_switch(data: Mapping[str, Any], preset: MethodPreset) -> bool:
    """Whether the fit config's DataModule is the wrong kind for ``preset``."""
    cls = import_class(str(data["class_path"]), "DataModule")
    real = bool(getattr(cls, "real_forget_images", False))
    has_forget_set = hasattr(cls, "make_forget_set")
    if preset.forget_images == "none":
        return has_forget_set  # a training-free method needs no forget set: do not make one
    if preset.forget_images == "real":
        return not real
    return real or not has_forget_set
