"""Floor 4, the Lightning pieces: :class:`UnlearningModule`, the methods, the callbacks, the
DataModules and the run report. Imports every floor below; nothing below imports it."""
