"""Pretraining the demo CLIP on the demo world, with Lightning.

``DemoWorldDataModule`` serves image-caption batches rendered from the world (captions from
each domain's own templates and, by default, open_clip's 80 OpenAI ImageNet templates, tokenized
with open_clip's tokenizer) and the two domains' zero-shot validation sets; ``DemoClipPretraining`` trains an open_clip model with open_clip's ``ClipLoss``
and logs the per-domain zero-shot accuracy.

Batches are class-balanced: each ``ClipLoss`` call sees every class of both domains exactly
once. In a CLIP batch, two images of the same class are each other's false negatives; with only
a few dozen classes a random batch of 256 would hold ~8 per class and the loss would fight
itself. ``batch_repeats`` such groups make one optimiser step.
"""

from __future__ import annotations

import math
from typing import Iterator, Literal, Optional

import lightning as L
import numpy as np
import open_clip
import torch
from lightning.pytorch.utilities import rank_zero_info
from open_clip.loss import ClipLoss
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lightning_unlearn.demo import DEMO_MODEL_NAME, world
from lightning_unlearn.demo.world_datasets import DemoWorldDataset
from lightning_unlearn.core.io import save_open_clip_weights
from lightning_unlearn.core.errors import ConfigError
from lightning_unlearn.maths.metrics import ZeroShotAccuracy
from lightning_unlearn.clip.loading import check_model_name, eval_mode, quiet_hf_pretrained_load, quiet_random_init
from lightning_unlearn.core._validation import (
    _positive_int_validation,
    _positive_number_validation,
    _unit_interval_validation,
)
from lightning_unlearn.maths.adversarial import l2_pgd
from lightning_unlearn.maths.zeroshot import class_embeddings, tokenize_classes, zero_shot_logits

#: Caption template sets: ``own`` = each domain's templates only (10 objects, 8 textures); ``own+openai``
#: adds open_clip's 80 OpenAI ImageNet templates, so that the text tower meets varied sentences
#: around a class name, as a real CLIP does, and its class features carry over to templates it
#: never saw (docs/demo_world.md, docs/edit.md).
CaptionTemplates = Literal["own", "own+openai"]
#: What follows the class name in the OpenAI templates of a domain ("a photo of a striped texture.").
_OPENAI_CLASS_SUFFIX = {"objects": "", "textures": " texture"}

_MEAN = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)


def to_model_input(images: np.ndarray | Tensor) -> Tensor:
    """uint8 ``N x H x W x 3`` images -> normalised float ``N x 3 x H x W``.

    Equals open_clip's eval preprocess of the demo model on the world's native-size images
    (its resize and centre crop are identities there), without the PIL round trip.
    """
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - _MEAN) / _STD


def augment_images(images: Tensor, gen: torch.Generator) -> Tensor:
    """Random horizontal flips and RGB channel permutations of uint8 ``N x H x W x 3`` images.

    Both keep an image inside the world's distribution (poses are mirrored at random and hues
    are uniform), so they stretch a rendered pool twelvefold. Off by default: within the demo's
    few hundred steps the model underfits rather than overfits, and augmentation slowed it down.
    """
    n = len(images)
    flip = torch.rand(n, generator=gen) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(2), images)
    perm = torch.argsort(torch.rand(n, 3, generator=gen), dim=1)
    return torch.gather(images, 3, perm[:, None, None, :].expand_as(images))


class _CaptionedBatches(IterableDataset):
    """An endless, seeded stream of class-balanced image-caption batches.

    A batch is ``repeats`` groups of one random image of every class, in class order, and one
    caption per class from a random template of its domain, shared by the groups: the text tower
    then runs once per class and step, a sixth of a step's time saved at four groups.
    Yields images ``[repeats, classes, 3, H, W]`` and tokens ``[classes, context]``.
    """

    def __init__(self, images: Tensor, tokens: Tensor, num_templates: Tensor, repeats: int, seed: int,
                 augment: bool = False, noise_std: float = 0.0) -> None:
        self.images = images  # uint8 [classes, per_class, H, W, 3]
        self.tokens = tokens  # [classes, max_templates, context]
        self.num_templates = num_templates  # [classes]
        self.repeats = repeats
        self.seed = seed
        self.augment = augment
        self.noise_std = noise_std

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        num_classes, per_class = self.images.shape[:2]
        classes = torch.arange(num_classes)
        while True:
            idx = torch.randint(0, per_class, (self.repeats, num_classes), generator=gen)
            tmpl = (torch.rand(num_classes, generator=gen) * self.num_templates).long()
            images = self.images[classes.repeat(self.repeats), idx.flatten()]
            if self.augment:
                images = augment_images(images, gen)
            images = to_model_input(images)
            if self.noise_std > 0:
                # per-image std uniform in [0, noise_std], in normalised pixel units
                std = torch.rand(len(images), 1, 1, 1, generator=gen) * self.noise_std
                images = images + std * torch.randn(images.shape, generator=gen)
            yield images.view(self.repeats, num_classes, *images.shape[1:]), self.tokens[classes, tmpl]


def pretraining_caption_templates(own: list[str] | tuple[str, ...], domain: str, which: CaptionTemplates) -> list[str]:
    """The templates a class of ``domain`` is captioned with during pretraining.

    ``own``: the domain's templates. ``own+openai``: those, then open_clip's 80 OpenAI ImageNet
    templates with the domain's class suffix (" texture" for textures). A template in both lists
    stays twice (it is drawn a little more often).
    """
    templates = list(own)
    if which == "own+openai":
        from lightning_unlearn.maths.promptbank import openai_templates

        suffix = _OPENAI_CLASS_SUFFIX.get(domain, "")
        templates += [t.replace("{}", "{}" + suffix) for t in openai_templates()]
    return templates


class _TensorImages(Dataset):
    """A demo dataset's images as model input tensors (validation)."""

    def __init__(self, dataset: DemoWorldDataset) -> None:
        self.images = to_model_input(dataset.images)
        self.labels = torch.as_tensor(dataset.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]


class DemoWorldDataModule(L.LightningDataModule):
    """Image-caption training batches and zero-shot validation sets from the demo world.

    Args:
        seed: world seed; the training images, their order and captions all follow from it.
        train_per_class: rendered training images per class (drawn with replacement each step).
        val_per_class: validation images per class and domain (the ``val`` split).
        batch_repeats: class-balanced groups per training batch (see the module docstring).
        augment: random flips and RGB channel permutations of training images (see :func:`augment_images`).
        noise_std: add Gaussian noise to training images, with a per-image standard deviation drawn
            uniformly from ``[0, noise_std]`` (normalised pixel units); 0 disables it. Noise makes
            the features robust to the noise image synthesis starts from, so synthetic images of a
            class carry its real features (docs/demo_world.md).
        caption_templates: ``own+openai`` (default): each class is captioned with its domain's
            templates, then open_clip's 80 OpenAI ImageNet templates; ``own``: its domain's
            templates only (the demo CLIP before commit b6322f8, 2026-11-30).
        model_name: open_clip model whose tokenizer encodes the captions.
        val_batch_size: batch size of the validation loaders.
    """

    def __init__(
        self,
        seed: int = 0,
        train_per_class: int = 400,
        val_per_class: int = 20,
        batch_repeats: int = 4,
        augment: bool = False,
        noise_std: float = 0.5,
        caption_templates: CaptionTemplates = "own+openai",
        model_name: str = DEMO_MODEL_NAME,
        val_batch_size: int = 512,
    ) -> None:
        super().__init__()
        if batch_repeats < 1:
            raise ConfigError(f"batch_repeats must be >= 1, got {batch_repeats}")
        if caption_templates not in ("own", "own+openai"):
            raise ConfigError(f"caption_templates must be 'own' or 'own+openai', got {caption_templates!r}")
        self.seed = seed
        self.train_per_class = train_per_class
        self.val_per_class = val_per_class
        self.batch_repeats = batch_repeats
        self.augment = augment
        self.noise_std = noise_std
        self.caption_templates = caption_templates
        self.model_name = model_name
        self.val_batch_size = val_batch_size
        self.domains: tuple[str, ...] = world.DOMAINS
        self._train: Optional[_CaptionedBatches] = None
        self._val: dict[str, DemoWorldDataset] = {}

    def setup(self, stage: str) -> None:
        # Rendering is seeded per image, so every rank builds identical sets.
        if stage == "fit" and self._train is None:
            check_model_name(self.model_name)  # registers a run-time config (demo-clip-lit)
            tokenizer = open_clip.get_tokenizer(self.model_name)
            images, captions = [], []
            for domain in self.domains:
                ds = DemoWorldDataset(domain, split="train", num_per_class=self.train_per_class, seed=self.seed)
                images.append(torch.from_numpy(ds.images).view(len(ds.classnames), self.train_per_class,
                                                               *ds.images.shape[1:]))
                templates = pretraining_caption_templates(ds.templates, domain, self.caption_templates)
                captions += [[t.format(name) for t in templates] for name in ds.classnames]
            width = max(len(c) for c in captions)
            # pad each class's caption list to a common length; only the first n are sampled
            tokens = torch.stack([tokenizer(c + [c[0]] * (width - len(c))) for c in captions])
            num_templates = torch.tensor([len(c) for c in captions])
            self._train = _CaptionedBatches(torch.cat(images), tokens, num_templates,
                                            self.batch_repeats, self.seed, augment=self.augment,
                                            noise_std=self.noise_std)
        if stage in ("fit", "validate") and not self._val:
            self._val = {d: DemoWorldDataset(d, split="val", num_per_class=self.val_per_class, seed=self.seed)
                         for d in self.domains}

    @property
    def num_classes(self) -> int:
        return sum(len(world.CLASSES[d]) for d in self.domains)

    def train_dataloader(self) -> DataLoader:
        assert self._train is not None, "call setup('fit') first"
        # batch_size=None: the dataset yields whole batches
        return DataLoader(self._train, batch_size=None)

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(_TensorImages(self._val[d]), batch_size=self.val_batch_size) for d in self.domains]


def _decays(name: str, param: nn.Parameter) -> bool:
    # CLIP convention: no weight decay on gains, biases, embeddings and the temperature
    return param.ndim >= 2 and "embedding" not in name and "logit_scale" not in name


class LockedTextFeatures:
    """The pooled features of a locked Hugging Face text tower, each caption encoded once.

    With the language model locked (LiT), a caption's pooled features never change; only the
    projection after them trains. Pretraining draws captions from a fixed list, so this keeps the
    features of every caption it has met, keyed by its tokens, and runs the language model only
    on new ones (each of the ~3,000 captions once, instead of once per step).
    """

    def __init__(self, text_tower: nn.Module) -> None:
        if not all(hasattr(text_tower, a) for a in ("transformer", "pooler", "proj", "config")):
            raise ConfigError(
                f"lock_text needs an open_clip HF text tower (HFTextEncoder), got {type(text_tower).__name__}; "
                "use a model whose text_cfg names hf_model_name (e.g. demo-clip-lit)")
        self.tower = text_tower
        self._features: dict[bytes, Tensor] = {}

    def __len__(self) -> int:
        return len(self._features)

    @torch.no_grad()
    def pooled(self, tokens: Tensor) -> Tensor:
        """Pooled (unprojected) features ``[N, width]`` of token rows ``[N, context]``."""
        keys = [row.cpu().numpy().tobytes() for row in tokens]
        new = [i for i, k in enumerate(keys) if k not in self._features]
        if new:
            todo = tokens[new]
            mask = (todo != self.tower.config.pad_token_id).long()
            # trailing padding changes nothing under the attention mask: run only the longest caption's length
            length = max(1, int(mask.sum(1).max()))
            with eval_mode(self.tower.transformer):
                out = self.tower.transformer(input_ids=todo[:, :length], attention_mask=mask[:, :length])
                pooled = self.tower.pooler(out, mask[:, :length])
            for i, feature in zip(new, pooled):
                self._features[keys[i]] = feature
        return torch.stack([self._features[k] for k in keys])


class DemoClipPretraining(L.LightningModule):
    """Contrastive pretraining of an open_clip CLIP on the demo world (open_clip's ``ClipLoss``).

    Logs ``train/loss`` and, per domain of the world, the zero-shot accuracy on the validation
    split with the domain's first template as ``val/acc_<domain>``.

    Args:
        model_name: open_clip model name (random init, or for an HF text tower the language model's
            own weights; the demo configs are registered on import of ``lightning_unlearn.demo``).
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay on weight matrices (not on gains, biases, embeddings).
        warmup_steps: linear warm-up steps; then cosine decay to zero at the trainer's last step.
        freeze_token_embedding: keep the text tower's token embedding at its random init. It is
            49,408 x width parameters of which the demo uses a few hundred rows; its dense AdamW
            update would cost more than the rest of a small step. (Only for open_clip's own text
            transformer; an HF tower is either locked or trained whole.)
        lock_text: keep an HF text tower's language model at its pretrained weights and train only
            its projection and the image tower (LiT); each caption then runs through the language
            model once (:class:`LockedTextFeatures`). The ``demo-clip-lit`` recipe.
        adv_radius: L2 radius (normalised pixel units, per image) of the adversarial training
            images; 0 disables adversarial training. A robust image tower has gradients that
            draw the class, so synthetic images of a class look like it (docs/demo_world.md).
        adv_steps: PGD steps per adversarial image (:func:`~lightning_unlearn.maths.adversarial.l2_pgd`).
        adv_fraction: share of each batch's class-balanced groups replaced by their adversarial
            versions (the clean/adversarial mix); ``round(fraction * groups)`` groups, each PGD step
            costing about one forward and backward pass of those images.
        max_logit_scale: the learned temperature is clamped to at most this, as in CLIP.
        channels_last: keep the image tower's weights and inputs channels-last while training;
            oneDNN's CPU convolutions run ~25% faster that way (the saved state dict is unaffected).
        export: at the end of ``fit``, write the weights here as a ``.safetensors`` state dict that
            ``open_clip.create_model_and_transforms(model_name, pretrained=export)`` loads (written
            atomically, by rank 0). None: no file (the demo cache writes its own).
    """

    def __init__(
        self,
        model_name: str = DEMO_MODEL_NAME,
        lr: float = 3e-3,
        weight_decay: float = 0.1,
        warmup_steps: int = 50,
        freeze_token_embedding: bool = True,
        lock_text: bool = False,
        adv_radius: float = 0.0,
        adv_steps: int = 3,
        adv_fraction: float = 1.0,
        max_logit_scale: float = 100.0,
        channels_last: bool = True,
        export: Optional[str] = None,
    ) -> None:
        super().__init__()
        _positive_number_validation("adv_radius", adv_radius, allow_zero=True)
        _positive_int_validation("adv_steps", adv_steps)
        _unit_interval_validation("adv_fraction", adv_fraction)
        self.save_hyperparameters()
        check_model_name(model_name)  # registers a run-time config (demo-clip-lit)
        # An HF text tower (demo-clip-lit's MiniLM) starts from its own pretrained weights: open_clip's
        # "initialized partially" and transformers' report of the unused BERT pooler say just that
        with quiet_random_init(), quiet_hf_pretrained_load(model_name):
            self.model = open_clip.create_model(model_name, output_dict=True)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        if freeze_token_embedding and hasattr(self.model, "token_embedding"):
            self.model.token_embedding.weight.requires_grad_(False)
        self.locked_text: Optional[LockedTextFeatures] = None
        if lock_text:
            self.locked_text = LockedTextFeatures(getattr(self.model, "text", self.model))
            self.model.text.transformer.requires_grad_(False)
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.visual.to(memory_format=self._memory_format)
        self.loss = ClipLoss()
        self.domains: tuple[str, ...] = world.DOMAINS
        self.val_acc = nn.ModuleList(ZeroShotAccuracy(num_classes=len(world.CLASSES[d])) for d in self.domains)
        self._class_embeddings: list[Tensor] = []

    def train(self, mode: bool = True) -> "DemoClipPretraining":
        super().train(mode)
        if self.locked_text is not None:
            self.model.text.transformer.eval()  # locked: its features are the pretrained ones (no dropout)
        return self

    def encode_captions(self, tokens: Tensor) -> Tensor:
        """Normalised caption features ``[N, D]`` (through the locked-feature cache with ``lock_text``)."""
        if self.locked_text is None:
            return self.model.encode_text(tokens, normalize=True)
        return nn.functional.normalize(self.model.text.proj(self.locked_text.pooled(tokens)), dim=-1)

    def _group_loss(self, images: Tensor, txt: Tensor, groups: int) -> Tensor:
        # one ClipLoss per class-balanced group (no class twice in a loss), captions shared
        img = self.model.encode_image(images, normalize=True).view(groups, txt.shape[0], -1)
        scale = self.model.logit_scale.exp()
        return torch.stack([self.loss(img[g], txt, scale) for g in range(groups)]).mean()

    def adversarial_groups(self, groups: int) -> int:
        """How many of a batch's ``groups`` are replaced by adversarial images."""
        if self.hparams.adv_radius == 0:
            return 0
        return int(round(self.hparams.adv_fraction * groups))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, tokens = batch  # images [groups, classes, 3, H, W], tokens [classes, context]
        groups = images.shape[0]
        txt = self.encode_captions(tokens)
        attacked = self.adversarial_groups(groups)
        if attacked:
            clean = images[:attacked].flatten(0, 1).contiguous(memory_format=self._memory_format)
            target = txt.detach()
            # BatchNorm on running statistics: the attack sees the model as used, and its passes
            # do not move the statistics
            with eval_mode(self.model.visual):
                adv = l2_pgd(lambda x: self._group_loss(x, target, attacked), clean,
                             radius=self.hparams.adv_radius, steps=self.hparams.adv_steps)
            images = torch.cat([adv.view_as(images[:attacked]), images[attacked:]])
        flat = images.flatten(0, 1).contiguous(memory_format=self._memory_format)
        loss = self._group_loss(flat, txt, groups)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(self.hparams.max_logit_scale))

    @torch.no_grad()
    def class_embeddings(self, domain: str) -> Tensor:
        """Normalised text embeddings ``[C, D]`` of a domain's classes with its first template."""
        return domain_embeddings(self.model, self.tokenizer, domain)

    def on_validation_epoch_start(self) -> None:
        self._class_embeddings = [self.class_embeddings(d) for d in self.domains]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        images, labels = batch
        features = self.model.encode_image(images.contiguous(memory_format=self._memory_format), normalize=True)
        self.val_acc[dataloader_idx].update(features @ self._class_embeddings[dataloader_idx].T, labels)

    def on_validation_epoch_end(self) -> None:
        for domain, metric in zip(self.domains, self.val_acc):
            self.log(f"val/acc_{domain}", metric.compute()["accuracy"], prog_bar=True)
            metric.reset()

    def on_fit_end(self) -> None:
        if self.hparams.export and self.trainer.is_global_zero:
            path = save_open_clip_weights(self.hparams.export, self.model, metadata={"model": self.hparams.model_name})
            rank_zero_info(f"Demo CLIP weights written to {path} (open_clip pretrained={str(path)!r})")

    def configure_optimizers(self):
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in named if _decays(n, p)], "weight_decay": self.hparams.weight_decay},
            {"params": [p for n, p in named if not _decays(n, p)], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, betas=(0.9, 0.98), eps=1e-6)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, self.hparams.warmup_steps)

        def factor(step: int) -> float:
            return min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def domain_embeddings(model: nn.Module, tokenizer, domain: str) -> Tensor:
    """Normalised class embeddings ``[C, D]`` of a demo domain under its evaluation (first) template."""
    tokens = tokenize_classes(tokenizer, world.CLASSES[domain], world.TEMPLATES[domain][:1])
    return class_embeddings(model.encode_text, tokens.to(next(model.parameters()).device))


@torch.no_grad()
def zero_shot_accuracy(
    model: nn.Module,
    tokenizer,
    split: str = "test",
    num_per_class: int = 50,
    seed: int = 0,
    batch_size: int = 512,
) -> dict[str, float]:
    """Zero-shot accuracy of ``model`` on each demo domain (first template), as a dict."""
    device = next(model.parameters()).device
    result: dict[str, float] = {}
    with eval_mode(model):
        for domain in world.DOMAINS:
            ds = DemoWorldDataset(domain, split=split, num_per_class=num_per_class, seed=seed)
            text = domain_embeddings(model, tokenizer, domain)
            metric = ZeroShotAccuracy(len(ds.classnames)).to(device)
            x = to_model_input(ds.images)
            labels = torch.as_tensor(ds.labels)
            for i in range(0, len(x), batch_size):
                logits = zero_shot_logits(model.encode_image(x[i:i + batch_size].to(device)), text)
                metric.update(logits, labels[i:i + batch_size].to(device))
            result[domain] = metric.compute()["accuracy"]
    return result
