"""Error-minimising / error-maximising noise (EMMN; Chundawat et al., "Zero-Shot Machine
Unlearning", IEEE TIFS 2023, after Tarun et al.'s UNSIR impair-repair), adapted to CLIP.

From class names alone (the zero-shot classifier of the spec's vocabulary):

1. noise: ``forget_noise_per_class`` images per forgotten class are learned from Gaussian noise to
   *maximise* the zero-shot cross-entropy of their class (error-maximising noise), and
   ``retain_noise_per_class`` images per retained class to *minimise* it (error-minimising noise,
   a stand-in for retain data); Adam on the pixels, clamped to the valid pixel range;
2. impair (``impair_steps`` optimiser steps): the model minimises the zero-shot cross-entropy of
   the forget noise (labelled as its forgotten class) plus that of a batch of retain noise;
3. repair (``repair_steps`` steps): the retain noise alone; then the method ends the fit.

The zero-shot logits are ``100 x cos`` between the image embedding and the template-averaged class
embeddings, computed with gradient through both towers. The forget images of the DataModule are
not used for training (they remain the run's forget-set accuracy, as for every method). The noise
is learned at the first training step (on the model's device, from a generator seeded by the
module's ``noise_seed``; under DDP rank zero's noise is broadcast) and kept for the whole fit.

The impair-repair schedule is the method's own: run it without ``SyntheticAccuracyStopping`` and
``NoiseLayerEscalation`` (the goal would end the run before the repair, and an undone epoch would
undo the impair step), as the ``emmn`` preset of ``lightning-unlearn compare`` does.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import torch
import torch.nn.functional as F

from lightning_unlearn.core._distributed import on_rank_zero
from lightning_unlearn.core._validation import _positive_int_validation, _positive_number_validation
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.methods.contract import MethodHost, UnlearningMethod
from lightning_unlearn.clip.loading import eval_mode
from lightning_unlearn.maths.synthesis import pixel_bounds
from lightning_unlearn.maths.zeroshot import class_embeddings, zero_shot_logits


class ErrorMinMaxNoise(UnlearningMethod):
    """EMMN: learn error-maximising forget noise and error-minimising retain noise, impair on
    both, repair on the retain noise.

    Args:
        forget_noise_per_class: error-maximising noise images per forgotten class.
        retain_noise_per_class: error-minimising noise images per retained class.
        noise_steps: Adam steps that learn the noise.
        noise_lr: Adam learning rate on the noise pixels (normalised space).
        noise_l2: weight of an L2 penalty on the noise pixels (0: none).
        impair_steps: optimiser steps on forget noise + retain noise.
        repair_steps: optimiser steps on retain noise alone, after which the fit ends.
        retain_batch: retain noise images per step (cycled through all of them).
    """

    short_name = "emmn"
    #: its own impair-repair schedule: a goal would end the run before the repair, and an undone
    #: epoch would undo the impair step (the module refuses stopping/escalation callbacks)
    steerable = False

    def __init__(
        self,
        forget_noise_per_class: int = 32,
        retain_noise_per_class: int = 4,
        noise_steps: int = 30,
        noise_lr: float = 0.1,
        noise_l2: float = 0.0,
        impair_steps: int = 5,
        repair_steps: int = 5,
        retain_batch: int = 64,
    ) -> None:
        for name, value in (("forget_noise_per_class", forget_noise_per_class),
                            ("retain_noise_per_class", retain_noise_per_class), ("noise_steps", noise_steps),
                            ("impair_steps", impair_steps), ("retain_batch", retain_batch)):
            _positive_int_validation(name, value)
        _positive_int_validation("repair_steps", repair_steps, allow_zero=True)
        _positive_number_validation("noise_lr", noise_lr)
        _positive_number_validation("noise_l2", noise_l2, allow_zero=True)
        noise_lr, noise_l2 = float(noise_lr), float(noise_l2)
        self._keep(locals())
        self._noise: Optional[dict[str, torch.Tensor]] = None
        self._summary: dict[str, Any] = {}

    def setup(self, module: "MethodHost") -> None:
        """Forget any noise of an earlier fit (the weights may have changed)."""
        if not module.spec.retain_indices():
            raise ConfigError("EMMN needs at least one class that is not forgotten")
        self._noise = None
        self._summary = {}

    # --- the noise ----------------------------------------------------------------------------
    def learn_noise(self, module: "MethodHost") -> dict[str, torch.Tensor]:
        """Learn the forget and retain noise for the module's current weights (no parameter
        gradient is touched); returns ``{forget_images, forget_labels, retain_images, retain_labels}``."""
        spec = module.spec
        device = module.device
        forget = torch.tensor(spec.forget_indices, dtype=torch.long).repeat_interleave(self.forget_noise_per_class)
        retain = torch.tensor(spec.retain_indices(), dtype=torch.long).repeat_interleave(self.retain_noise_per_class)
        labels = torch.cat([forget, retain]).to(device)
        maximise = torch.cat([torch.ones(len(forget)), -torch.ones(len(retain))]).to(device)
        lo, hi = (b.to(device) for b in pixel_bounds(module.image_mean, module.image_std))
        generator = torch.Generator().manual_seed(int(module.hparams.noise_seed))
        size = module.image_size
        x = torch.randn((len(labels), 3, size, size), generator=generator).to(device)
        x = torch.maximum(torch.minimum(x, hi), lo).requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=self.noise_lr)
        embeddings = module.vocabulary_embeddings()
        with eval_mode(module.model), torch.enable_grad():
            for _ in range(self.noise_steps):
                ce = F.cross_entropy(zero_shot_logits(module.encode_image(x), embeddings), labels, reduction="none")
                # Forget noise ascends its class's loss, retain noise descends it.
                objective = (-maximise * ce).sum() + self.noise_l2 * x.flatten(1).norm(dim=1).sum()
                (grad,) = torch.autograd.grad(objective, x)
                optimizer.zero_grad(set_to_none=True)
                x.grad = grad
                optimizer.step()
                with torch.no_grad():
                    x.copy_(torch.maximum(torch.minimum(x, hi), lo))
            with torch.no_grad():
                pred = zero_shot_logits(module.encode_image(x), embeddings).argmax(dim=-1)
        x = x.detach()
        is_forget = maximise > 0
        self._summary = {
            "forget_noise": int(is_forget.sum()), "retain_noise": int((~is_forget).sum()),
            "forget_noise_acc": float((pred[is_forget] == labels[is_forget]).float().mean()),
            "retain_noise_acc": float((pred[~is_forget] == labels[~is_forget]).float().mean()),
        }
        return {"forget_images": x[is_forget], "forget_labels": labels[is_forget],
                "retain_images": x[~is_forget], "retain_labels": labels[~is_forget]}

    def _ensure_noise(self, module: "MethodHost") -> dict[str, torch.Tensor]:
        if self._noise is None:
            start = time.perf_counter()

            def learn() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
                noise = self.learn_noise(module)
                return {k: v.cpu() for k, v in noise.items()}, dict(self._summary)

            # Learned once, on rank 0; every rank trains on the same noise.
            trainer = module.attached_trainer
            noise, self._summary = on_rank_zero(trainer, learn) if trainer is not None else learn()
            self._noise = {k: v.to(module.device) for k, v in noise.items()}
            self.timings["noise"] = time.perf_counter() - start
        return self._noise

    def state_dict(self) -> dict[str, Any]:
        """The learned noise and its summary: a resumed run impairs and repairs on the same noise."""
        if self._noise is None:
            return {}
        return {"noise": {k: v.cpu() for k, v in self._noise.items()}, "summary": dict(self._summary)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "noise" in state:
            self._noise = dict(state["noise"])
            self._summary = dict(state.get("summary", {}))

    # --- impair and repair --------------------------------------------------------------------
    @staticmethod
    def _zero_shot_loss(module: "MethodHost", embeddings: torch.Tensor, images: torch.Tensor,
                        labels: torch.Tensor) -> torch.Tensor:
        """Zero-shot cross-entropy (gradient through both towers: ``embeddings`` carry the text's)."""
        return F.cross_entropy(zero_shot_logits(module.encode_image(images), embeddings), labels)

    def phase(self, step: int) -> str:
        """``impair``, ``repair`` or ``done`` for optimiser step ``step`` (0-based)."""
        if step < self.impair_steps:
            return "impair"
        return "repair" if step < self.impair_steps + self.repair_steps else "done"

    def training_step(self, module: "MethodHost", batch: dict[str, Any]) -> torch.Tensor:
        noise = {k: v.to(module.device) for k, v in self._ensure_noise(module).items()}
        step = int(module.global_step)
        count = len(noise["retain_labels"])
        rows = (torch.arange(self.retain_batch) + step * self.retain_batch) % count
        rows = rows[: min(self.retain_batch, count)].to(module.device)
        embeddings = class_embeddings(module.model.encode_text, module.vocab_tokens)  # once per step
        loss = self._zero_shot_loss(module, embeddings, noise["retain_images"][rows], noise["retain_labels"][rows])
        if self.phase(step) == "impair":
            loss = loss + self._zero_shot_loss(module, embeddings, noise["forget_images"], noise["forget_labels"])
        trainer = module.attached_trainer
        if self.phase(step + 1) == "done" and trainer is not None:
            trainer.should_stop = True  # the schedule is over: end the fit after this step
        return loss

    def report_section(self) -> Optional[dict[str, Any]]:
        """The noise that was learned (counts and its zero-shot accuracy) and the schedule."""
        if not self._summary:
            return None
        return {"emmn": {**self._summary, "impair_steps": self.impair_steps, "repair_steps": self.repair_steps}}
