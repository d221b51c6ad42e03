"""The evaluation suite: forgetting judged by more than top-1 accuracy at one template.

Sections, each a module of pure functions of image features and tensors:

- :mod:`~lightning_unlearn.evaluation.features`: image features of every evaluation dataset,
  computed once per model state (sharded per rank, gathered) and shared by the sections;
- :mod:`~lightning_unlearn.evaluation.templates`: zero-shot accuracy per evaluation template;
- :mod:`~lightning_unlearn.evaluation.retrieval`: image-from-text and image-from-image precision@k;
- :mod:`~lightning_unlearn.evaluation.verification`: real against synthetic forget images (section 5.6);
- :mod:`~lightning_unlearn.evaluation.probes`: linear probe, nearest class mean, relearning, paraphrases;
- :mod:`~lightning_unlearn.evaluation.inversion`: the textual-inversion attack on a frozen open_clip
  text tower (its optimisation: :mod:`lightning_unlearn.maths.textual_inversion`);
- :mod:`~lightning_unlearn.evaluation.descriptions`: class descriptions files (synthesis prompts, paraphrases);
- :mod:`~lightning_unlearn.evaluation.plots` and :mod:`~lightning_unlearn.evaluation.render`: the report's
  plots and tables;
- :mod:`~lightning_unlearn.evaluation.suite`: :class:`EvaluationSuite` (the settings) and
  :class:`EvaluationRunner` (runs them on a module).
"""

from lightning_unlearn.evaluation.suite import EvaluationRunner, EvaluationSuite, assemble
from lightning_unlearn.evaluation.templates import PAPER_TEMPLATES

__all__ = ["EvaluationRunner", "EvaluationSuite", "PAPER_TEMPLATES", "assemble"]
