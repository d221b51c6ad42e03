"""Floor 2, the CLIP model: loading open_clip models and weights (tags, files, project-made
weights), parameter eligibility and fingerprints. Imports ``core`` and ``maths``."""
