"""Null-space projection (arXiv 2512.14137), a training-free peer of the text-projection edit.

The directions spanned by the forgotten classes' text embeddings are projected out of a final
projection, with strength ``alpha``: ``P <- P (I - alpha U U^T)``. On the text side every prompt
loses its component along those directions; on the image side every image does. There is no
retain constraint: the paper publishes no code, so this follows its description.
"""

from __future__ import annotations

import time
from typing import Any, Literal, Optional

import torch

from lightning_unlearn.core._validation import (
    _choice_validation,
    _positive_int_validation,
    _templates_validation,
    _unit_interval_validation,
)
from lightning_unlearn.methods.contract import MethodHost, UnlearningMethod
from lightning_unlearn.clip.loading import eval_mode
from lightning_unlearn.core.names import prompt_name
from lightning_unlearn.clip.text_projection import (
    image_projection_names,
    locate_text_projection,
    nullspace_project_image,
    nullspace_project_text,
)
from lightning_unlearn.maths.textedit import orthonormal_directions

Side = Literal["text", "image"]


class NullSpaceProjection(UnlearningMethod):
    """Project the forgotten classes' text-embedding directions out of a final projection (ZS).

    Args:
        alpha: strength in [0, 1]; 1 removes the directions entirely.
        side: ``text``: the text tower's ``text_projection`` (``text.proj`` of a Hugging Face tower,
            an ``nn.Linear``); ``image``: the image tower's final projection (``visual.proj`` of a
            ViT, ``visual.attnpool.c_proj`` of a ModifiedResNet), for any text tower.
        directions_per_class: leading singular directions of each class's embeddings kept.
        templates: templates the classes' embeddings are taken under (default: the forget
            vocabulary's templates).
    """

    short_name = "nullspace"
    trains = False

    def __init__(
        self,
        alpha: float = 1.0,
        side: Side = "text",
        directions_per_class: int = 1,
        templates: Optional[list[str]] = None,
    ) -> None:
        _unit_interval_validation("alpha", alpha)
        _choice_validation("side", side, ("text", "image"))
        _positive_int_validation("directions_per_class", directions_per_class)
        if templates is not None:
            _templates_validation("templates", templates)
        alpha = float(alpha)
        templates = list(templates) if templates is not None else None
        self._keep(locals())

    def _check_model(self, model: torch.nn.Module) -> None:
        # The directions come from encode_text, whatever ends the text tower (an MLP included):
        # only the projection that is written must be linear.
        if self.side == "text":
            locate_text_projection(model)
        else:
            image_projection_names(model)

    def setup(self, module: "MethodHost") -> None:
        self._check_model(module.model)

    def apply(self, module: "MethodHost") -> dict[str, Any]:
        spec = module.spec
        templates = self.templates or list(spec.vocabulary.templates)
        start = time.perf_counter()
        device = next(module.model.parameters()).device
        with eval_mode(module.model):
            embeddings = [
                module.model.encode_text(module.tokenizer([t.format(prompt_name(n)) for t in templates]).to(device))
                .detach().cpu()
                for n in spec.names
            ]
        basis = orthonormal_directions(embeddings, per_class=self.directions_per_class)
        if self.side == "text":
            nullspace_project_text(module.model, basis.to(torch.float64), self.alpha)
            changed = locate_text_projection(module.model).parameter_names()
        else:
            nullspace_project_image(module.model, basis.to(torch.float64), self.alpha)
            changed = image_projection_names(module.model)
        self.timings["edit"] = time.perf_counter() - start
        return {"side": self.side, "alpha": self.alpha, "directions": int(basis.shape[1]),
                "templates": len(templates), "changed": changed}
