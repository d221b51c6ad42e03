"""Re-encoding the same prompts through a Hugging Face text tower whose lower layers did not change.

Unlearning checks its stopping signal after every optimizer step, and each check encodes the whole
vocabulary again (the demo: 24 classes x 10 templates through MiniLM) because the text tower may
have changed. It changes only where the optimizer stepped: the selected tensors, on the demo the
top two of MiniLM's six layers. :class:`PrefixCachedEncoder` keeps, for one batch of token ids,
the hidden states at the input of every encoder layer and a copy of the weights that made them;
the next call on the same tokens compares the weights (``torch.equal``, a few milliseconds) and
runs only from the lowest layer that changed. The result is the same tensor the whole tower
gives (same kernels on the same inputs: bitwise), which ``tests/unit/test_hf_towers.py`` checks.

Only for no-grad encodes of a tower in eval mode (dropout off); any other call, a tower that is
not a Hugging Face one, or a layout it does not recognise, runs the plain ``encode_text``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from lightning_unlearn.clip.loading import hf_encoder_layers, hf_text_tower


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


class PrefixCachedEncoder:
    """``encode_text`` of ``model`` that reuses the unchanged lower layers of its Hugging Face text
    tower across calls on the same token ids (see the module docstring). Callable like
    ``model.encode_text``; holds one batch of tokens (the last one seen) and its states.

    Args:
        model: an open_clip CLIP; with no Hugging Face text tower every call is ``model.encode_text``.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.tower = hf_text_tower(model)
        self.parent: Optional[nn.Module] = None
        self.attr = ""
        self.layers: Optional[nn.ModuleList] = None
        self.embeddings: Optional[nn.Module] = None
        if self.tower is not None:
            try:
                path = hf_encoder_layers(self.tower)
            except Exception:  # an unrecognised layout: plain encodes
                path = None
            transformer = self.tower.transformer
            if path is not None and isinstance(getattr(transformer, "embeddings", None), nn.Module):
                parent_path, _, self.attr = path.rpartition(".")
                self.parent = transformer.get_submodule(parent_path) if parent_path else transformer
                self.layers = getattr(self.parent, self.attr)
                self.embeddings = transformer.embeddings
        self._tokens: Optional[torch.Tensor] = None
        self._states: list[torch.Tensor] = []  # input of layer i (i < n), then the last layer's output
        self._weights: list[list[torch.Tensor]] = []  # embeddings, layer 0, ..., layer n-1
        self.layers_run = 0  # encoder layers run by the last call (for tests and benchmarks)

    @property
    def active(self) -> bool:
        """Whether calls can reuse layers (a recognised Hugging Face tower)."""
        return self.layers is not None

    def _modules(self) -> list[nn.Module]:
        assert self.embeddings is not None and self.layers is not None
        return [self.embeddings, *self.layers]

    def _first_changed(self) -> int:
        """Index into :meth:`_modules` of the lowest module whose weights differ from the copy."""
        for index, module in enumerate(self._modules()):
            if not all(torch.equal(p, q) for p, q in zip(module.parameters(), self._weights[index])):
                return index
        return len(self._weights)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.active or torch.is_grad_enabled() or self.tower.training:
            self.layers_run = len(self.layers) if self.layers is not None else 0
            return self.model.encode_text(tokens)
        same = (self._tokens is not None and self._tokens.device == tokens.device
                and self._tokens.shape == tokens.shape and torch.equal(self._tokens, tokens))
        changed = self._first_changed() if same else 0  # 0: embeddings; i + 1: layer i; n + 1: none
        if changed == 0:
            return self._run(tokens, 0)
        # layer `changed - 1` is the lowest that changed: its input is still valid (if nothing
        # changed, the last layer runs again: the states stay checked by the hooks below)
        return self._run(tokens, min(changed - 1, len(self.layers) - 1))

    def _run(self, tokens: torch.Tensor, first: int) -> torch.Tensor:
        """Encode ``tokens`` running encoder layers ``first, ...`` only (0: the whole tower),
        recording the states they make and the weights that made them."""
        assert self.layers is not None and self.embeddings is not None
        layers, n = self.layers, len(self.layers)
        states: list[Optional[torch.Tensor]] = [None] * (n + 1)
        hooks = []

        def record(index: int) -> Callable[..., None]:
            def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
                states[index] = args[0] if args else kwargs.get("hidden_states")
            return hook

        def record_last(module: nn.Module, args: tuple, output: Any) -> None:
            states[n] = _hidden(output)

        for i in range(first, n):
            hooks.append(layers[i].register_forward_pre_hook(record(i), with_kwargs=True))
        hooks.append(layers[n - 1].register_forward_hook(record_last))
        cached = self._states[first] if first > 0 else None
        if cached is not None:  # the cached input of layer `first` replaces the embeddings' output
            hooks.append(self.embeddings.register_forward_hook(lambda module, args, output: cached))
        try:
            with self._layers_from(first):
                out = self.model.encode_text(tokens)
        finally:
            for hook in hooks:
                hook.remove()
        if any(state is None for state in states[first:]) or (cached is not None and states[first] is not cached):
            # the hooks did not see the layout this expects: forget the states, encode plainly
            self._tokens, self._states, self._weights = None, [], []
            return out if first == 0 else self.model.encode_text(tokens)
        self._states = [*self._states[:first], *states[first:]]  # type: ignore[list-item]
        modules = self._modules()
        kept = self._weights[: first + 1] if first > 0 else [[p.detach().clone() for p in modules[0].parameters()]]
        self._weights = kept + [[p.detach().clone() for p in m.parameters()] for m in modules[first + 1:]]
        self._tokens = tokens.clone()
        self.layers_run = n - first
        return out

    @contextlib.contextmanager
    def _layers_from(self, first: int) -> Iterator[None]:
        """The encoder runs layers ``first, ...`` only while inside."""
        if first == 0:
            yield
            return
        assert self.parent is not None and self.layers is not None
        setattr(self.parent, self.attr, nn.ModuleList(list(self.layers)[first:]))
        try:
            yield
        finally:
            setattr(self.parent, self.attr, self.layers)


__all__ = ["PrefixCachedEncoder"]
