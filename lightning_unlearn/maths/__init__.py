"""Floor 1, pure maths: the forget spec, zero-shot scoring, the unlearning objectives, synthesis,
the edit's linear algebra, the accuracy metric, prompt banks and the inversion attack's
optimisation. Functions of tensors and values: no files, no Trainer. Imports only :mod:`lightning_unlearn.core`."""
