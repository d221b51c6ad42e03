"""What the eligible tensors of the demo CLIP could do with real data: a reference, not the method.

The demo misses the issue's selectivity bars (docs/demo.md). This script separates the two
possible causes: is the demo CLIP unable to forget one class selectively by changing only the
tensors the method may change, or does the method not find such a change? It fine-tunes exactly
the tensors that the ``paper`` eligibility preset allows (the ResNet attention pool, or the text
blocks) with what the method never has: real images of every class. The loss is cross-entropy on
the retained classes of both domains plus the target class's zero-shot probability on its real
images. Every tensor is stepped (no top-k selection) with Adam. The world's ``train`` split is
used for the fit, its ``test`` split (50 images per class) for the numbers, as in the harness
rows of docs/demo.md.

If this reaches the bars, the eligible tensors are able to forget selectively. The shortfall then
lies in what a forget-only objective on synthetic images can find.

    python benchmarks/demo_retain_bound.py [--classes anchor kite rocket] [--towers vision text]
        [--steps 150] [--lr 1e-3] [--model demo-clip-lit]

The demo CLIP is ``demo-clip-lit`` (its ``paper`` text tensors: MiniLM's encoder layers);
``--model demo-clip-rn`` runs the demo CLIP until 2026-12-07, on which docs/demo.md's table was
measured.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from lightning_unlearn.demo import DEMO_LIT_MODEL_NAME, DEMO_MODEL_NAME, world
from lightning_unlearn.demo.cache import ensure_demo_clip, ensure_demo_clip_lit
from lightning_unlearn.demo.world_datasets import DemoWorldDataset
from lightning_unlearn.demo.pretrain import to_model_input
from lightning_unlearn.clip.loading import eligible_groups, freeze_ineligible, load_clip, set_batchnorm_eval, set_dropout_eval
from lightning_unlearn.maths.zeroshot import encode_classes, zero_shot_logits


def split_tensors(split: str, per_class: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{domain: (model input, labels)}`` of one split of the demo world."""
    out = {}
    for domain in world.DOMAINS:
        ds = DemoWorldDataset(domain, split=split, num_per_class=per_class, seed=0)
        out[domain] = (to_model_input(ds.images), torch.as_tensor(ds.labels))
    return out


@torch.no_grad()
def accuracies(model, tokenizer, test, target: int) -> dict[str, float]:
    """Zero-shot accuracy (template ensemble) on the target, the other objects and the textures."""
    model.eval()
    result = {}
    for domain, (x, y) in test.items():
        classes = encode_classes(model, tokenizer, world.CLASSES[domain], world.TEMPLATES[domain])
        correct = (zero_shot_logits(model.encode_image(x), classes).argmax(1) == y).float()
        if domain == "objects":
            result["target"] = correct[y == target].mean().item()
            result["other"] = correct[y != target].mean().item()
        else:
            result["domain"] = correct.mean().item()
    return result


def bound(weights: str, cls: str, tower: str, steps: int, lr: float, train, test,
          model_name: str = DEMO_LIT_MODEL_NAME) -> tuple[dict, dict]:
    loaded = load_clip(model_name, weights)
    model, tokenizer = loaded.model, loaded.tokenizer
    target = world.CLASSES["objects"].index(cls)
    before = accuracies(model, tokenizer, test, target)
    groups = {tower: eligible_groups(model, "paper")[tower]}
    freeze_ineligible(model, groups)
    optimizer = torch.optim.Adam([p for _, p in groups[tower]], lr=lr)
    tokens = {d: tokenizer([world.TEMPLATES[d][0].format(c) for c in world.CLASSES[d]]) for d in world.DOMAINS}
    gen = torch.Generator().manual_seed(0)
    model.train()
    set_batchnorm_eval(model)  # frozen trunk: its BatchNorm statistics stay as trained
    set_dropout_eval(model)  # an HF text tower (MiniLM) has dropout: off, as in unlearning
    for _ in range(steps):
        loss = torch.zeros(())
        for domain, (x, y) in train.items():
            idx = torch.randperm(len(y), generator=gen)[:256]
            logits = 50 * F.normalize(model.encode_image(x[idx]), dim=-1) @ F.normalize(
                model.encode_text(tokens[domain]), dim=-1).T
            keep = y[idx] != target if domain == "objects" else torch.ones(len(idx), dtype=torch.bool)
            loss = loss + F.cross_entropy(logits[keep], y[idx][keep])
            if domain == "objects" and (~keep).any():
                loss = loss + 5 * logits[~keep].softmax(-1)[:, target].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return before, accuracies(model, tokenizer, test, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", nargs="+", default=["anchor", "kite", "rocket"])
    parser.add_argument("--towers", nargs="+", default=["vision", "text"], choices=["vision", "text"])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--model", default=DEMO_LIT_MODEL_NAME, choices=[DEMO_LIT_MODEL_NAME, DEMO_MODEL_NAME])
    args = parser.parse_args()
    torch.set_num_threads(1)
    weights = str((ensure_demo_clip_lit if args.model == DEMO_LIT_MODEL_NAME else ensure_demo_clip)())
    train, test = split_tensors("train", 40), split_tensors("test", 50)
    print(f"{'class':8} {'tower':6} {'target':>13} {'other objects':>15} {'textures':>15} {'s':>4}")
    for cls in args.classes:
        for tower in args.towers:
            start = time.perf_counter()
            b, a = bound(weights, cls, tower, args.steps, args.lr, train, test, args.model)
            print(f"{cls:8} {tower:6} {b['target']:.2f} -> {a['target']:.2f}"
                  f" {100 * (a['other'] - b['other']):+8.1f} pts {100 * (a['domain'] - b['domain']):+8.1f} pts"
                  f" {time.perf_counter() - start:4.0f}", flush=True)


if __name__ == "__main__":
    main()
