"""lightning-unlearn: make a CLIP model forget a class from synthetic samples, with Lightning."""

import lightning_unlearn.datasets  # noqa: F401  (registers the evaluation datasets)

try:  # the demo world registers its datasets and tiny model config
    import lightning_unlearn.demo  # noqa: F401
except ImportError as _err:  # pragma: no cover - only while the demo package is incomplete
    import warnings

    warnings.warn(f"demo world unavailable: {_err}")

from lightning_unlearn.module import UnlearningModule  # noqa: E402

__all__ = ["UnlearningModule"]
__version__ = "0.1.0"


def _demo_weights() -> str:
    """The cached demo CLIP (trained on first use): ``pretrained: demo-world`` resolves here."""
    import contextvars

    from lightning_unlearn.demo.cache import ensure_demo_clip

    # A fresh context: LightningCLI passes the outer module's config through a ContextVar that
    # the pretraining module's save_hyperparameters() would otherwise pick up.
    return str(contextvars.Context().run(ensure_demo_clip))


try:
    from lightning_unlearn.demo import DEMO_MODEL_NAME as _DEMO_MODEL_NAME
    from lightning_unlearn.models import register_pretrained as _register_pretrained

    _register_pretrained(_DEMO_MODEL_NAME, "demo-world", _demo_weights)
except ImportError:  # pragma: no cover
    pass
