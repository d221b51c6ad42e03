"""Issues 12 and 19's accuracy bars for the text-projection edit on a demo CLIP, run by run.

For each forget set (every object class alone, and random 3-class sets) the edit is solved with the
shipped defaults (or the options below) through ``build_edit_problem`` / ``solve_edit``, the same
code ``lightning-unlearn fit --config configs/demo_edit.yaml`` runs, and zero-shot accuracy is
measured on the objects and textures test splits (50 images per class) for each image seed:

- at the evaluation templates: the target's accuracy, the other objects' drop and the textures'
  drop (points);
- at each set of templates the edit never saw, averaged over the set's templates: the target's
  accuracy and the other objects' drop;
- with ``--paraphrases FILE`` (class -> prompts without the class word), the forgotten classes'
  accuracy when each one's classifier row is one of its paraphrases in turn (the other rows at the
  evaluation template), averaged over its paraphrases, then over the forgotten classes: issue 19's
  "unseen paraphrases" (give paraphrases the edit never saw); and, not a bar, the drop of the
  other classes the file describes, each named by its own paraphrases (points).

A run (forget set x image seed x template set) meets the bars when the target is <= 0.02 and both
drops are <= 0.5 at the evaluation templates, and the averaged target is <= 0.05 and the averaged
drop <= 2 at the unseen templates (and, with ``--paraphrases``, the paraphrased target <= 0.20). It prints every run, then mean / worst per measure and how many
runs meet every bar, and writes the rows to ``--out`` (JSON).

    python benchmarks/bench_edit_bars.py [--model demo-clip-lit] [--templates test new table9 | FILE ...]
                                         [--paraphrases FILE] [--classes anchor kite ...]
                                         [--triples 8] [--triple-seed 2] [--triple-classes anchor kite ...]
                                         [--image-seeds 0 1] [--relative-weight 1] [--rank-per-class 2] [--no-exact]
                                         [--bank-paraphrases demo-paraphrases] [--held-out-paraphrases 3]
                                         [--paraphrase-weight 0.5] [--paraphrase-rank 2]

``FILE``: a text file with one template (``{}`` for the class) per line, e.g. your own held-out set.
The built-in sets are those of docs/edit.md (TEST, NEW, the paper's Table 9 templates).
``--bank-paraphrases`` is the edit's own ``paraphrases`` setting (what it forgets besides the word);
``--paraphrases`` is what the bars are measured on, and should hold none of the bank's.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/README.md (shared 2-core CPUs)

import argparse
import json
import logging
import random
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from lightning_unlearn.demo import world
from lightning_unlearn.demo.world_datasets import DemoWorldDataset
from lightning_unlearn.demo.pretrain import to_model_input
from lightning_unlearn.methods.edit import DEFAULT_RELATIVE_WEIGHT, EditSettings, build_edit_problem, solve_edit
from lightning_unlearn.clip.loading import load_clip
from lightning_unlearn.core.names import prompt_name
from lightning_unlearn.maths.forget_spec import Vocabulary
from lightning_unlearn.clip.text_projection import locate_text_projection, pooled_text_features
from lightning_unlearn.maths.zeroshot import zero_shot_logits
from lightning_unlearn.maths.textedit import split_paraphrases
from lightning_unlearn.core.names import class_key
from lightning_unlearn.evaluation.descriptions import descriptions_for, load_descriptions
from lightning_unlearn.evaluation.features import DatasetFeatures
from lightning_unlearn.evaluation.probes import own_paraphrase_accuracy

TEMPLATE_SETS = {
    "test": ["We can see a {} in this image", "This is a representation of {}",
             "There is evidence of a {} in the picture", "a quick sketch of a {}.", "Someone took a photo of a {}.",
             "an example of a {}.", "a {} in the scene.", "I think this is a {}.", "a zoomed-in shot of the {}.",
             "the picture contains a {}.", "a colorful {}.", "here we have a {}."],
    "new": ["a photograph showing a {}.", "I love this {}.", "can you see the {}?", "a drawing of one {}.",
            "the {} is here.", "a {} from a distance.", "check out the {}.", "there it is: a {}.",
            "a close-up of a {}.", "an image with a {} in it.", "a simple {}.", "what a {}!"],
    "table9": ["We can see a {} in this image", "This is a representation of {}",
               "There is evidence of a {} in the picture"],
}
#: The issue's bars: (measure, limit); every measure is "lower is better".
BARS = (("eval_target", 0.02), ("eval_others_drop", 0.5), ("eval_textures_drop", 0.5),
        ("unseen_target", 0.05), ("unseen_others_drop", 2.0))
#: Issue 19's bar on paraphrases the edit never saw (checked only with ``--paraphrases``).
PARAPHRASE_BAR = ("unseen_paraphrase_target", 0.20)
FORGET_PROMPT = "A picture of {}"  # configs/demo_edit.yaml's forget_prompt


def meets_bars(row: dict[str, Any]) -> list[str]:
    """The bars ``row`` misses (empty when it meets them all); the paraphrase bar when ``row`` has it."""
    bars = BARS + ((PARAPHRASE_BAR,) if PARAPHRASE_BAR[0] in row else ())
    # 1e-6: accuracies come as float32 means (10 of 50 images is 0.2000000030), a bar is met at equality
    return [name for name, limit in bars if row[name] > limit + 1e-6]


def read_templates(spec: str) -> tuple[str, list[str]]:
    """A built-in template set by name, or a file with one template per line."""
    if spec in TEMPLATE_SETS:
        return spec, TEMPLATE_SETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise SystemExit(f"--templates: {spec!r} is neither a built-in set ({', '.join(TEMPLATE_SETS)}) nor a file")
    templates = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise SystemExit(f"--templates {spec}: every line must hold exactly one '{{}}'; bad: {bad[:3]}")
    return path.stem, templates


class Scorer:
    """Zero-shot accuracy of the demo CLIP with a given text projection, class prompts encoded once."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.projection = locate_text_projection(model)
        self._pooled: dict[tuple[tuple[str, ...], str], torch.Tensor] = {}

    def pooled(self, classnames: Sequence[str], template: str) -> torch.Tensor:
        key = (tuple(classnames), template)
        if key not in self._pooled:
            prompts = [template.format(prompt_name(c)) for c in classnames]
            self._pooled[key] = self.projection.augment(pooled_text_features(self.model, self.tokenizer(prompts)))
        return self._pooled[key]

    def pooled_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        key = (tuple(prompts), "")
        if key not in self._pooled:
            self._pooled[key] = self.projection.augment(pooled_text_features(self.model, self.tokenizer(list(prompts))))
        return self._pooled[key]

    def paraphrase_accuracy(self, matrix: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                            classnames: Sequence[str], template: str, label: int, prompts: Sequence[str]) -> float:
        """Mean over ``prompts`` of class ``label``'s accuracy with its row replaced by each prompt (the
        other rows under ``template``)."""
        embeddings = torch.nn.functional.normalize(self.pooled(classnames, template).double() @ matrix.double(), dim=-1)
        rows = torch.nn.functional.normalize(self.pooled_prompts(prompts).double() @ matrix.double(), dim=-1)
        # the evaluation suite's measure (recovery.paraphrases.retained): the row replaced, the others kept
        return statistics.mean(own_paraphrase_accuracy(DatasetFeatures(features, labels), embeddings, label, rows))

    def correct(self, matrix: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                classnames: Sequence[str], template: str) -> torch.Tensor:
        """Whether each image is classified right under ``template`` with projection ``matrix``."""
        embeddings = torch.nn.functional.normalize(self.pooled(classnames, template).double() @ matrix.double(), dim=-1)
        return zero_shot_logits(features.double(), embeddings).argmax(1) == labels


def accuracy(correct: torch.Tensor, mask: torch.Tensor) -> float:
    return float(correct[mask].double().mean()) if bool(mask.any()) else float("nan")


def draw_triples(classes: Sequence[str], pool: Sequence[str], count: int, seed: int) -> list[list[int]]:
    """``count`` 3-class forget sets drawn (seeded) from ``pool``, as sorted indices into ``classes``."""
    rng = random.Random(seed)
    return [sorted(classes.index(c) for c in rng.sample(list(pool), 3)) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo-clip-lit", help="demo CLIP: demo-clip-lit or demo-clip-rn (cached)")
    parser.add_argument("--templates", nargs="+", default=["test", "new", "table9"],
                        help="held-out template sets: built-in names or files (one template per line)")
    parser.add_argument("--paraphrases", default=None,
                        help="held-out paraphrases (JSON class -> prompts): issue 19's bar on unseen paraphrases")
    parser.add_argument("--classes", nargs="*", default=None, help="single classes to forget (default: every object)")
    parser.add_argument("--triples", type=int, default=8, help="random 3-class forget sets")
    parser.add_argument("--triple-seed", type=int, default=2)
    parser.add_argument("--triple-classes", nargs="+", default=None,
                        help="classes the 3-class sets are drawn from (default: every object)")
    parser.add_argument("--image-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--images-per-class", type=int, default=50)
    parser.add_argument("--relative-weight", type=float, default=DEFAULT_RELATIVE_WEIGHT)
    parser.add_argument("--rank-per-class", type=int, default=2)
    parser.add_argument("--no-exact", action="store_true", help="exact_other_domains: false")
    parser.add_argument("--bank-paraphrases", default=None,
                        help="the edit's paraphrases setting (file or packaged name, e.g. demo-paraphrases)")
    parser.add_argument("--held-out-paraphrases", type=int, default=3)
    parser.add_argument("--paraphrase-weight", type=float, default=0.5)
    parser.add_argument("--paraphrase-rank", type=int, default=2)
    parser.add_argument("--out", default="bench_edit_bars.json")
    args = parser.parse_args()
    logging.getLogger("root").setLevel(logging.ERROR)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    start = time.perf_counter()

    template_sets = [read_templates(spec) for spec in args.templates]
    clip = load_clip(args.model, "demo-world")
    model, tokenizer = clip.model.eval(), clip.tokenizer
    objects = Vocabulary(tuple(world.OBJECT_CLASSES), tuple(world.OBJECT_TEMPLATES), "demo_objects")
    textures = Vocabulary(tuple(world.TEXTURE_CLASSES), tuple(world.TEXTURE_TEMPLATES), "demo_textures")
    vocabularies = [objects, textures]
    classes = list(objects.classnames)
    unknown = [c for c in (args.classes or []) + (args.triple_classes or []) if c not in classes]
    if unknown:
        raise SystemExit(f"--classes/--triple-classes: {unknown} are not demo object classes; known: {', '.join(classes)}")
    singles = [[classes.index(c)] for c in (args.classes if args.classes is not None else classes)]
    triples = draw_triples(classes, args.triple_classes or classes, args.triples, args.triple_seed)
    described = load_descriptions(args.paraphrases) if args.paraphrases else None
    held_out = descriptions_for(described, sorted({classes[i] for f in singles + triples for i in f}),
                                "--paraphrases") if described is not None else None
    # every class the file describes: the kept ones' own paraphrases show damage to language at large
    described_labels = [] if described is None else [
        i for i, c in enumerate(classes) if class_key(c) in {class_key(k) for k in described}]
    if described is not None:
        held_out = {**descriptions_for(described, [classes[i] for i in described_labels], "--paraphrases"), **held_out}
    bank_texts = load_descriptions(args.bank_paraphrases) if args.bank_paraphrases else None

    images = {}
    with torch.no_grad():
        for seed in args.image_seeds:
            objs = DemoWorldDataset("objects", "test", args.images_per_class, seed=seed)
            texs = DemoWorldDataset("textures", "test", args.images_per_class, seed=seed)
            images[seed] = (model.encode_image(to_model_input(objs.images)), torch.as_tensor(objs.labels),
                            model.encode_image(to_model_input(texs.images)), torch.as_tensor(texs.labels))
    scorer = Scorer(model, tokenizer)
    original = scorer.projection.matrix()

    rows: list[dict[str, Any]] = []
    for kind, forget_sets in (("single", singles), ("triple", triples)):
        for forget in forget_sets:
            names = [classes[i] for i in forget]
            bank = None
            if bank_texts is not None:  # as TextProjectionEdit.setup: the bank without its held-out split
                found = descriptions_for(bank_texts, names, "--bank-paraphrases")
                bank = {n: split_paraphrases(found[n], args.held_out_paraphrases, 0, key=class_key(n))[0] for n in names}
                if held_out is not None:
                    overlap = [t for n in names for t in held_out[n] if t in bank[n]]
                    if overlap:
                        raise SystemExit(f"--paraphrases {overlap[:2]} are in the edit's bank: they are not unseen")
            settings = EditSettings(paraphrase_bank=bank, paraphrase_weight=args.paraphrase_weight)
            problem = build_edit_problem(model, tokenizer, names, [FORGET_PROMPT.format(prompt_name(n)) for n in names],
                                         vocabularies, settings, forget_prompt_template=FORGET_PROMPT)
            edited = solve_edit(problem, 1.0, 1e-3, args.rank_per_class, args.relative_weight,
                                exact_other_domains=not args.no_exact, paraphrase_rank=args.paraphrase_rank).matrix
            for seed, (obj_f, obj_l, tex_f, tex_l) in images.items():
                target = torch.zeros(len(classes), dtype=torch.bool)
                target[forget] = True
                is_target = target[obj_l]

                def object_accuracy(matrix: torch.Tensor, template: str) -> tuple[float, float]:
                    ok = scorer.correct(matrix, obj_f, obj_l, classes, template)
                    return accuracy(ok, is_target), accuracy(ok, ~is_target)

                def texture_accuracy(matrix: torch.Tensor) -> float:
                    ok = scorer.correct(matrix, tex_f, tex_l, textures.classnames, textures.templates[0])
                    return float(ok.double().mean())

                def paraphrased(matrix: torch.Tensor) -> float:
                    assert held_out is not None
                    return statistics.mean(scorer.paraphrase_accuracy(matrix, obj_f, obj_l, classes, evaluation, i,
                                                                      held_out[classes[i]]) for i in forget)

                evaluation = objects.templates[0]
                eval_before, eval_after = object_accuracy(original, evaluation), object_accuracy(edited, evaluation)
                textures_drop = 100 * (texture_accuracy(original) - texture_accuracy(edited))
                extra = {}
                if held_out is not None:
                    kept = [i for i in described_labels if i not in forget]

                    def kept_paraphrased(matrix: torch.Tensor) -> float:
                        return statistics.mean(scorer.paraphrase_accuracy(matrix, obj_f, obj_l, classes, evaluation, i,
                                                                          held_out[classes[i]]) for i in kept)

                    extra = {"unseen_paraphrase_target": paraphrased(edited),
                             "paraphrase_target_before": paraphrased(original)}
                    if kept:  # not a bar: the other classes named by their own paraphrases (points)
                        extra["others_paraphrase_drop"] = 100 * (kept_paraphrased(original) - kept_paraphrased(edited))
                for set_name, templates in template_sets:
                    before = [object_accuracy(original, t) for t in templates]
                    after = [object_accuracy(edited, t) for t in templates]
                    row = {
                        "kind": kind, "classes": names, "image_seed": seed, "templates": set_name,
                        "eval_target_before": eval_before[0],
                        "eval_target": eval_after[0],
                        "eval_others_drop": 100 * (eval_before[1] - eval_after[1]),
                        "eval_textures_drop": textures_drop,
                        "unseen_target_before": statistics.mean(b[0] for b in before),
                        "unseen_target": statistics.mean(a[0] for a in after),
                        "unseen_others_drop": 100 * statistics.mean(b[1] - a[1] for b, a in zip(before, after)),
                        **extra,
                    }
                    row["missed"] = meets_bars(row)
                    rows.append(row)
                    print(f"{kind:6s} {'+'.join(names):28s} seed {seed} {set_name:8s} "
                          + " ".join(f"{k} {row[k]:+.3f}" for k, _ in bars_of(row))
                          + (f"  MISSES {', '.join(row['missed'])}" if row["missed"] else ""), flush=True)

    bars = BARS + ((PARAPHRASE_BAR,) if held_out is not None else ())
    print(f"\n{'template set':14s} {'forget sets':11s} {'runs meeting every bar':>24s}  "
          + "  ".join(f"{name} mean/worst" for name, _ in bars))
    for set_name, _ in template_sets:
        for kind in ("single", "triple"):
            part = [r for r in rows if r["templates"] == set_name and r["kind"] == kind]
            if not part:
                continue
            passed = sum(not r["missed"] for r in part)
            stats = "  ".join(f"{statistics.mean(r[name] for r in part):+.3f}/{max(r[name] for r in part):+.3f}"
                              for name, _ in bars)
            print(f"{set_name:14s} {kind + 's':11s} {passed:>17d} of {len(part):<4d}  {stats}")
    Path(args.out).write_text(json.dumps({"model": args.model, "bars": dict(bars), "rows": rows}, indent=1))
    print(f"\n{len(rows)} runs in {time.perf_counter() - start:.0f} s; rows written to {args.out}")


def bars_of(row: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    return BARS + ((PARAPHRASE_BAR,) if PARAPHRASE_BAR[0] in row else ())


if __name__ == "__main__":
    main()
