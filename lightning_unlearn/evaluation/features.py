"""Image features of every evaluation dataset, computed once per model state and shared.

Each rank encodes its shard of every dataset (every ``world_size``-th image, no padding, as
:meth:`~lightning_unlearn.datamodules.EvaluationDataModule.evaluation_loaders` yields them); the
shards are gathered to every rank and put back in dataset order, so every section sees the whole
dataset and every rank computes the same numbers. Features stay raw (unnormalised) so the
zero-shot accuracies computed from them are exactly those of
:meth:`~lightning_unlearn.UnlearningModule.evaluate_datasets`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import torch

from lightning_unlearn.core.errors import ConfigError
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class DatasetFeatures:
    """Raw image features of one dataset, in dataset order, on the CPU.

    Attributes:
        features: ``[N, D]`` raw image embeddings.
        labels: ``[N]`` class labels.
    """

    features: torch.Tensor
    labels: torch.Tensor
    _normalized: Optional[torch.Tensor] = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.labels.ndim != 1 or len(self.features) != len(self.labels):
            raise ConfigError(f"features [N, D] and labels [N] must agree, got {tuple(self.features.shape)} "
                             f"and {tuple(self.labels.shape)}")

    @property
    def normalized(self) -> torch.Tensor:
        """L2-normalised features ``[N, D]`` (computed once)."""
        if self._normalized is None:
            self._normalized = F.normalize(self.features.float(), dim=-1)
        return self._normalized

    def __len__(self) -> int:
        return len(self.labels)


Shard = tuple[torch.Tensor, torch.Tensor]


@torch.no_grad()
def encode_loader(encode_image: ImageEncoder, loader: DataLoader, device: torch.device) -> Shard:
    """Raw features and labels of every batch of ``loader`` (CPU tensors)."""
    features, labels = [], []
    for images, batch_labels in loader:
        features.append(encode_image(images.to(device)).float().cpu())
        labels.append(torch.as_tensor(batch_labels).cpu())
    if not features:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(features), torch.cat(labels).long()


def interleave_shards(shards: list[Shard]) -> Shard:
    """Put rank shards (rank ``r`` holds images ``r, r + W, r + 2W, ...``) back in dataset order."""
    world = len(shards)
    total = sum(len(labels) for _, labels in shards)
    dim = next((f.shape[1] for f, _ in shards if f.numel()), 0)
    features = torch.zeros(total, dim)
    labels = torch.zeros(total, dtype=torch.long)
    for rank, (f, y) in enumerate(shards):
        if len(y):
            features[rank::world] = f
            labels[rank::world] = y
    return features, labels


def gather_shard(shard: Shard, world_size: int) -> Shard:
    """This rank's shard gathered with every other rank's, in dataset order (identity on one process)."""
    if world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return shard
    parts: list[Optional[Shard]] = [None] * world_size
    dist.all_gather_object(parts, (shard[0].cpu(), shard[1].cpu()))
    return interleave_shards([p for p in parts if p is not None])


def gather_features(shards: Mapping[str, Shard], world_size: int) -> dict[str, DatasetFeatures]:
    """Every dataset's rank shards gathered into :class:`DatasetFeatures` (call on every rank)."""
    out = {}
    for name, shard in shards.items():
        features, labels = gather_shard(shard, world_size)
        out[name] = DatasetFeatures(features, labels)
    return out


def compute_features(
    encode_image: ImageEncoder, loaders: Mapping[str, DataLoader], device: torch.device, world_size: int = 1
) -> dict[str, DatasetFeatures]:
    """Encode each rank's shard of every dataset and gather them (call on every rank)."""
    return gather_features({name: encode_loader(encode_image, loader, device) for name, loader in loaders.items()},
                           world_size)


@torch.no_grad()
def encode_images(encode_image: ImageEncoder, images: torch.Tensor, device: torch.device,
                  batch_size: int = 256) -> torch.Tensor:
    """Raw features ``[M, D]`` of a tensor of images, ``batch_size`` at a time (CPU result)."""
    parts = [encode_image(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, 0)
