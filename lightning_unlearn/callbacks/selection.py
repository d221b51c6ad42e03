r"""
Gradient layer selection
^^^^^^^^^^^^^^^^^^^^^^^^

After every backward pass, keep only the ``k`` parameter tensors of each group with the largest mean absolute
gradient and drop every other gradient, so that the optimizer leaves those tensors untouched.

"""

import math
import re
from collections.abc import Mapping
from typing import Any, Literal, Optional, Union

import torch
from torch import nn
from typing_extensions import override

import lightning.pytorch as pl
from lightning.pytorch.callbacks.callback import Callback
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_unlearn.core._validation import (
    _choice_validation,
    _k_validation,
    _positive_int_validation,
    _regex_list_validation,
    _str_keyed_dict_validation,
)
from lightning_unlearn.core.errors import ConfigError, MissingEntryError, UnlearnError

_NamedParams = list[tuple[str, nn.Parameter]]



class CallbackConfigError(UnlearnError, MisconfigurationException):
    """A callback's settings do not fit the run (found at ``setup``/fit start): Lightning's
    ``MisconfigurationException``, in the project's error family."""


class GradientLayerSelection(Callback):
    r"""Keep the gradients of the top-``k`` parameter tensors of each group and drop all others.

    At every optimizer step (in ``on_before_optimizer_step``, where gradients are already unscaled by mixed
    precision and averaged across DDP ranks) each eligible parameter tensor of a group is scored by its mean
    absolute gradient, ``sum(|grad|) / numel``. The ``k`` best tensors of the group keep their gradient; every other
    tensor of the group gets ``grad = None``, so that ``torch.optim`` optimizers such as Adam skip it entirely
    (no update, no momentum, no weight decay). A zero gradient would not do that.

    Groups are given either as regular expressions searched (:func:`re.search`) in the names of
    ``pl_module.named_parameters()``, or, when ``groups`` is ``None``, by the LightningModule's own
    ``parameter_groups() -> dict[str, list[tuple[str, nn.Parameter]]]``. Only tensors that require grad and have a
    gradient at that step are scored. Parameters that require grad but belong to no group are dropped or kept as a
    whole according to ``other``.

    Keep the whole eligible set trainable from the start (``requires_grad=True``) and let this callback select:
    DDP registers only the parameters that require grad when it wraps the model.

    Args:
        k: number of tensors kept per group; an int applies to every group, a dict gives one value per group (it must
            name every group). Change it while training with :meth:`set_k`.
        groups: group name -> list of regular expressions matched with :func:`re.search` against parameter names.
            A parameter matching patterns of two groups is an error. ``None`` asks the LightningModule for
            ``parameter_groups()``.
        other: what happens to the gradients of parameters that require grad but are in no group: ``"drop"``
            (set to ``None``, the default) or ``"keep"`` (left as they are).
        log_selection: log the number of tensors kept per group at every step as ``selection/<group>_k``.

    Attributes:
        selection_counts: parameter name -> number of optimizer steps at which it was selected.
        last_selected: group name -> names selected at the last step, best score first.

    Raises:
        ~lightning_unlearn.core.errors.ConfigError: (a ``ValueError``) if an argument is invalid; the message quotes it.
        MisconfigurationException: at fit start, if groups cannot be determined or do not match ``k``.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> selection = GradientLayerSelection(k={"vision": 5, "text": 5},
        ...                                    groups={"vision": [r"^visual\."], "text": [r"^transformer\."]})
        >>> trainer = Trainer(callbacks=[selection])

    .. tip:: Several instances can be saved and restored together if they differ in ``k``, ``groups`` or ``other``.

    """

    def __init__(
        self,
        k: Union[int, dict[str, int]] = 5,
        groups: Optional[dict[str, list[str]]] = None,
        other: Literal["drop", "keep"] = "drop",
        log_selection: bool = True,
    ) -> None:
        super().__init__()
        if groups is not None:
            _str_keyed_dict_validation("`groups`", groups, "group -> list of regex patterns")
            for group, patterns in groups.items():
                _regex_list_validation(f"`groups[{group!r}]`", patterns)
        _k_validation("`k`", k, groups=list(groups) if groups is not None else None)
        _choice_validation("`other`", other, ("drop", "keep"))

        self.k = dict(k) if isinstance(k, Mapping) else k
        self.groups = {g: list(p) for g, p in groups.items()} if groups is not None else None
        self._patterns: Optional[dict[str, list[re.Pattern]]] = (
            {g: [re.compile(p) for p in patterns] for g, patterns in self.groups.items()} if self.groups is not None else None
        )
        self.other = other
        self.log_selection = log_selection

        self.selection_counts: dict[str, int] = {}
        self.last_selected: dict[str, list[str]] = {}

        # values set with `set_k`, on top of `k`; persisted so that a resumed run keeps them
        self._k_overrides: dict[str, int] = {}
        # resolved at fit start: group -> [(name, parameter)], and the parameters that are in no group
        self._resolved: Optional[dict[str, _NamedParams]] = None
        self._others: _NamedParams = []

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(k=self.k, groups=self.groups, other=self.other)

    # ------------------------------------------------------------------ k
    def _known_groups(self) -> Optional[list[str]]:
        """Group names known so far, or ``None`` if they come from the module and it was not asked yet."""
        if self._resolved is not None:
            return list(self._resolved)
        if self.groups is not None:
            return list(self.groups)
        if isinstance(self.k, dict):
            return list(self.k)
        return None

    def set_k(self, group: str, value: int) -> None:
        """Change the number of tensors kept in ``group``; takes effect at the next optimizer step.

        Args:
            group: a group name.
            value: a positive int.

        Raises:
            ~lightning_unlearn.core.errors.ConfigError: if ``value`` is not a positive int, or ``group`` is not a known
                group (groups that come from ``parameter_groups()`` are checked at fit start).

        """
        _positive_int_validation(f"`k` for group {group!r}", value)
        known = self._known_groups()
        if known is not None and group not in known:
            raise ConfigError(f"Unknown group {group!r} in `set_k`; the groups are {known}")
        # if the groups are not known yet (they come from `parameter_groups()`), the name is checked at fit start
        self._k_overrides[group] = value

    def get_k(self, group: str) -> int:
        """The number of tensors currently kept in ``group``."""
        if group in self._k_overrides:
            return self._k_overrides[group]
        if isinstance(self.k, dict):
            if group not in self.k:
                raise MissingEntryError(f"`k` has no value for group {group!r}; it has {sorted(self.k)}")
            return self.k[group]
        return self.k

    @property
    def current_k(self) -> dict[str, int]:
        """Group -> current ``k`` for every known group."""
        return {group: self.get_k(group) for group in (self._known_groups() or list(self._k_overrides))}

    # ------------------------------------------------------------------ groups
    def _resolve_groups(self, pl_module: "pl.LightningModule") -> dict[str, _NamedParams]:
        named = list(pl_module.named_parameters())
        if self._patterns is not None:
            resolved = self._groups_from_patterns(named, type(pl_module).__name__)
        else:
            resolved = self._groups_from_module(pl_module)
        grouped = {id(p) for members in resolved.values() for _, p in members}
        self._others = [(n, p) for n, p in named if p.requires_grad and id(p) not in grouped]
        self._check_k_covers(list(resolved))
        return resolved

    def _groups_from_patterns(self, named: _NamedParams, module_name: str) -> dict[str, _NamedParams]:
        """Group -> the parameters whose names match the group's patterns; each group must match one at least."""
        assert self._patterns is not None and self.groups is not None
        resolved: dict[str, _NamedParams] = {group: [] for group in self._patterns}
        for name, param in named:
            hits = [g for g, patterns in self._patterns.items() if any(p.search(name) for p in patterns)]
            if len(hits) > 1:
                raise CallbackConfigError(
                    f"Parameter {name!r} matches the patterns of several groups {hits}; make `groups` disjoint."
                )
            if hits:
                resolved[hits[0]].append((name, param))
        for group, members in resolved.items():
            if not members:
                raise CallbackConfigError(
                    f"Group {group!r} matches no parameter of {module_name}"
                    f" (patterns {self.groups[group]!r}; e.g. names {[n for n, _ in named[:5]]})."
                )
        return resolved

    @staticmethod
    def _call_parameter_groups(pl_module: "pl.LightningModule") -> Mapping[str, Any]:
        """``pl_module.parameter_groups()``, checked to be a non-empty mapping."""
        get_groups = getattr(pl_module, "parameter_groups", None)
        if not callable(get_groups):
            raise CallbackConfigError(
                f"`GradientLayerSelection(groups=None)` needs `{type(pl_module).__name__}.parameter_groups()`"
                " returning dict[str, list[tuple[str, nn.Parameter]]]; implement it or pass `groups` patterns."
            )
        raw = get_groups()
        if not isinstance(raw, Mapping) or not raw:
            raise CallbackConfigError(
                f"`parameter_groups()` must return a non-empty dict of group -> [(name, parameter)], got {raw!r}"
            )
        return raw

    @classmethod
    def _groups_from_module(cls, pl_module: "pl.LightningModule") -> dict[str, _NamedParams]:
        """Group -> parameters from ``pl_module.parameter_groups()``; a parameter listed twice in a group counts once."""
        raw = cls._call_parameter_groups(pl_module)
        resolved: dict[str, _NamedParams] = {}
        owner: dict[int, str] = {}
        for group, members in raw.items():
            resolved[group] = []
            for item in members:
                if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], torch.Tensor)):
                    raise CallbackConfigError(
                        f"`parameter_groups()[{group!r}]` must hold (name, parameter) pairs, got {item!r}"
                    )
                name, param = item
                if id(param) in owner:  # listed twice: an error across groups, counted once within one
                    if owner[id(param)] != group:
                        raise CallbackConfigError(
                            f"Parameter {name!r} is in two groups of `parameter_groups()`:"
                            f" {owner[id(param)]!r} and {group!r}."
                        )
                    continue
                owner[id(param)] = group
                resolved[group].append((name, param))
        return resolved

    def _check_k_covers(self, groups: list[str]) -> None:
        """``k`` (and the values set with :meth:`set_k`) must give a value for every group and name no other."""
        for group in groups:
            try:
                self.get_k(group)
            except KeyError as err:
                raise CallbackConfigError(
                    f"`k` has no value for group {group!r} (groups: {groups}, k={self.k!r});"
                    " give `k` as an int or a dict naming every group."
                ) from err
        named_in_k = (set(self.k) if isinstance(self.k, dict) else set()) | set(self._k_overrides)
        unknown = sorted(named_in_k - set(groups))
        if unknown:
            raise CallbackConfigError(f"`k` names unknown groups {unknown}; the groups are {groups}")

    def resolve(self, pl_module: "pl.LightningModule") -> dict[str, list[str]]:
        """Determine the groups of ``pl_module`` (done automatically at fit start).

        Returns:
            group -> names of its parameters, in parameter order.

        """
        self._resolved = self._resolve_groups(pl_module)
        return {group: [n for n, _ in members] for group, members in self._resolved.items()}

    @override
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # after `configure_model` and the strategy's setup, so every parameter exists
        self.resolve(pl_module)

    # ------------------------------------------------------------------ masking
    @override
    def on_before_optimizer_step(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", optimizer: torch.optim.Optimizer
    ) -> None:
        if self._resolved is None:
            self.resolve(pl_module)
        assert self._resolved is not None
        for group, members in self._resolved.items():
            selected = self._select(members, self.get_k(group))
            self.last_selected[group] = selected
            for name in selected:
                self.selection_counts[name] = self.selection_counts.get(name, 0) + 1
            if self.log_selection:
                pl_module.log(f"selection/{group}_k", float(len(selected)), on_step=True, on_epoch=False)
        if self.other == "drop":
            for _, param in self._others:
                param.grad = None

    @staticmethod
    @torch.no_grad()
    def _select(members: _NamedParams, k: int) -> list[str]:
        candidates = [(name, p) for name, p in members if p.requires_grad and p.grad is not None]
        if not candidates:
            return []
        device = candidates[0][1].grad.device
        scores = torch.stack([
            (p.grad.abs().sum(dtype=torch.float32) / p.numel()).to(device) for _, p in candidates
        ]).tolist()

        def rank(i: int) -> tuple[bool, float, int]:
            # Best first: NaN scores first (so a broken gradient is not silently hidden), then by score descending,
            # then by parameter order. The rule is deterministic and DDP has already averaged the gradients, so
            # every rank computes the same scores and selects the same tensors without any communication.
            score = scores[i]
            return (not math.isnan(score), 0.0 if math.isnan(score) else -score, i)

        order = sorted(range(len(candidates)), key=rank)
        keep = set(order[:k])
        for i, (_, param) in enumerate(candidates):
            if i not in keep:
                param.grad = None
        return [candidates[i][0] for i in order[:k]]

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "selection_counts": dict(self.selection_counts),
            "last_selected": {g: list(names) for g, names in self.last_selected.items()},
            "k_overrides": dict(self._k_overrides),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.selection_counts = {str(n): int(c) for n, c in state_dict.get("selection_counts", {}).items()}
        self.last_selected = {str(g): list(names) for g, names in state_dict.get("last_selected", {}).items()}
        self._k_overrides = {str(g): int(v) for g, v in state_dict.get("k_overrides", {}).items()}
