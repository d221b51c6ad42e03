"""Linear concept erasure: oblique projections that equalise class-conditional means (LEACE).

LEACE (Belrose et al., 2023, "LEACE: Perfect linear concept erasure in closed form"; EleutherAI's
``concept-erasure`` package) is the affine map ``x -> x - M (x - m)`` of least expected squared
change (in the covariance's metric) after which no linear predictor does better than a constant
at predicting a concept ``z`` from ``x``: the class-conditional means become equal. Its closed
form, for covariance ``S`` and cross-covariance ``S_xz``, is the oblique projection

    M = D (D^T S^-1 D)^-1 D^T S^-1,        D = S_xz,

which removes the span of ``D`` along a readout that leaves directions of large variance alone.
:func:`oblique_eraser` builds that map for any directions (e.g. a class direction taken from text
embeddings) and any covariance; :func:`leace_eraser` estimates both from samples. Pure functions
of tensors, float64; nothing here reads a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from lightning_unlearn.core.errors import ConfigError, IllConditionedError


@dataclass(frozen=True)
class AffineEraser:
    """``x -> x - ((x - mean) @ readout) @ directions.T``: removes the span of ``directions``.

    Attributes:
        directions: ``[d, k]`` the directions removed (any basis of their span).
        readout: ``[d, k]`` how much of each is read from ``x`` (``readout.T @ directions = I``,
            so the map is a projection: applying it twice is applying it once).
        mean: ``[d]`` the point the erased coordinates are set to (the estimation mean).
    """

    directions: Tensor
    readout: Tensor
    mean: Tensor

    def __call__(self, x: Tensor) -> Tensor:
        x64 = x.to(torch.float64)
        return (x64 - ((x64 - self.mean) @ self.readout) @ self.directions.T).to(x.dtype)

    def linear(self) -> Tensor:
        """``A`` ``[d, d]`` of the map written as ``x -> A x + offset`` (column vectors)."""
        d = self.directions.shape[0]
        return torch.eye(d, dtype=torch.float64) - self.directions @ self.readout.T

    def offset(self) -> Tensor:
        """``[d]`` the constant of the map written as ``x -> A x + offset``."""
        return self.directions @ (self.readout.T @ self.mean)

    @property
    def rank(self) -> int:
        return int(self.directions.shape[1])


def covariance(x: Tensor, weights: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Weighted mean ``[d]`` and covariance ``[d, d]`` of rows ``x`` ``[n, d]`` (float64; weights
    default to uniform and are normalised to sum 1)."""
    x = x.to(torch.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ConfigError(f"need at least 2 samples as a 2-D tensor [n, d], got shape {tuple(x.shape)}")
    w = torch.full((len(x),), 1.0 / len(x), dtype=torch.float64) if weights is None else weights.to(torch.float64)
    if w.shape != (len(x),) or bool((w < 0).any()) or not float(w.sum()) > 0:
        raise ConfigError(f"weights must be {len(x)} non-negative numbers with a positive sum")
    w = w / w.sum()
    mean = w @ x
    centred = x - mean
    return mean, (centred * w[:, None]).T @ centred


def shrunk(cov: Tensor, shrinkage: float) -> Tensor:
    """``cov + shrinkage * (trace(cov) / d) * I``: a covariance pulled towards isotropy (``shrinkage``
    relative to the mean variance per coordinate), so that directions the samples barely cover are
    not read with huge weights."""
    if not shrinkage >= 0:
        raise ConfigError(f"shrinkage must be a finite number >= 0, got {shrinkage!r}")
    d = cov.shape[0]
    return cov + shrinkage * (torch.trace(cov) / d) * torch.eye(d, dtype=cov.dtype)


def oblique_eraser(directions: Tensor, cov: Tensor, mean: Tensor, rcond: float = 1e-10) -> AffineEraser:
    """The least-change eraser of the span of ``directions`` ``[d, k]`` under covariance ``cov``.

    ``readout = S^-1 D (D^T S^-1 D)^-1`` (``S^-1`` the pseudo-inverse on eigenvalues above
    ``rcond`` times the largest), so the map removes exactly the span of ``D`` and, among all maps
    that do, changes samples of covariance ``S`` least in expected squared norm.

    Raises:
        ConfigError: shapes that do not fit.
        IllConditionedError: directions the covariance does not see (``D^T S^-1 D`` singular) or
            non-finite input.
    """
    directions = directions.to(torch.float64)
    if directions.ndim == 1:
        directions = directions[:, None]
    cov, mean = cov.to(torch.float64), mean.to(torch.float64)
    d = cov.shape[0]
    if cov.shape != (d, d) or directions.shape[0] != d or mean.shape != (d,):
        raise ConfigError(f"directions [d, k], cov [d, d] and mean [d] must share d; got "
                          f"{tuple(directions.shape)}, {tuple(cov.shape)}, {tuple(mean.shape)}")
    if not all(bool(torch.isfinite(t).all()) for t in (directions, cov, mean)):
        raise IllConditionedError("the eraser's directions, covariance or mean are not finite")
    values, vectors = torch.linalg.eigh(0.5 * (cov + cov.T))
    keep = values > rcond * values.max().clamp_min(torch.finfo(torch.float64).tiny)
    inverse = (vectors[:, keep] / values[keep]) @ vectors[:, keep].T
    basis = torch.linalg.qr(directions)[0]
    gram = basis.T @ inverse @ basis
    if float(torch.linalg.matrix_rank(gram)) < basis.shape[1]:
        raise IllConditionedError("the covariance does not see the directions to erase (D^T S^-1 D is singular); "
                                  "use shrinkage > 0")
    readout = inverse @ basis @ torch.linalg.inv(gram)
    return AffineEraser(directions=basis, readout=readout, mean=mean)


def leace_eraser(x: Tensor, z: Tensor, weights: Optional[Tensor] = None, shrinkage: float = 0.0) -> AffineEraser:
    """LEACE estimated from samples ``x`` ``[n, d]`` and concept ``z`` ``[n]`` (binary) or ``[n, k]``.

    The directions are the cross-covariance ``S_xz`` (one per concept column), the metric the
    (optionally :func:`shrunk`) covariance of ``x``. With ``shrinkage = 0`` the class-conditional
    means of the erased samples are equal (the defining property, tested).
    """
    x = x.to(torch.float64)
    z = z.to(torch.float64)
    if z.ndim == 1:
        z = z[:, None]
    if len(z) != len(x):
        raise ConfigError(f"x and z must have the same number of rows, got {len(x)} and {len(z)}")
    mean, cov = covariance(x, weights)
    w = torch.full((len(x),), 1.0 / len(x), dtype=torch.float64) if weights is None else weights.to(torch.float64)
    w = w / w.sum()
    z_centred = z - w @ z
    cross = ((x - mean) * w[:, None]).T @ z_centred  # [d, k]
    singular = torch.linalg.svdvals(cross)
    if not float(singular.max()) > 0:
        raise ConfigError("the concept is constant on the samples: there is nothing to erase")
    # a k-column concept with linearly dependent columns (one-hot classes) has rank < k
    rank = int((singular > 1e-12 * singular.max()).sum())
    u = torch.linalg.svd(cross, full_matrices=False)[0][:, :rank]
    return oblique_eraser(u, shrunk(cov, shrinkage), mean)
