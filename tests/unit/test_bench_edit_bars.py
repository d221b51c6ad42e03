"""The bar bookkeeping of benchmarks/bench_edit_bars.py (the script itself needs the demo CLIP)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_edit_bars.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_edit_bars", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_run_meets_the_bars_only_within_every_limit(bench):
    good = {"eval_target": 0.02, "eval_others_drop": -1.0, "eval_textures_drop": 0.5, "unseen_target": 0.05,
            "unseen_others_drop": 2.0}
    assert bench.meets_bars(good) == []
    assert bench.meets_bars({**good, "unseen_target": 0.051}) == ["unseen_target"]
    assert bench.meets_bars({**good, "eval_others_drop": 0.6, "unseen_others_drop": 2.5}) == [
        "eval_others_drop", "unseen_others_drop"]


def test_template_sets_by_name_or_file(bench, tmp_path):
    assert bench.read_templates("table9") == ("table9", bench.TEMPLATE_SETS["table9"])
    mine = tmp_path / "mine.txt"
    mine.write_text("a {} here\n\nmy {}!\n")
    assert bench.read_templates(str(mine)) == ("mine", ["a {} here", "my {}!"])
    mine.write_text("a {} here\nno placeholder\n")
    with pytest.raises(SystemExit, match="exactly one"):
        bench.read_templates(str(mine))
    with pytest.raises(SystemExit, match="neither a built-in set"):
        bench.read_templates("tset")


def test_held_out_sets_are_unseen_by_the_edit_and_by_pretraining(bench):
    from lightning_unlearn.demo import world
    from lightning_unlearn.demo.pretrain import pretraining_caption_templates
    from lightning_unlearn.methods.edit import EditSettings, template_bank

    held_out = {t for templates in bench.TEMPLATE_SETS.values() for t in templates}
    assert not held_out & set(template_bank(world.OBJECT_TEMPLATES, EditSettings()))
    assert not held_out & set(pretraining_caption_templates(world.OBJECT_TEMPLATES, "objects", "own+openai"))


def test_the_paraphrase_bar_counts_only_when_measured(bench):
    good = {"eval_target": 0.0, "eval_others_drop": 0.0, "eval_textures_drop": 0.0, "unseen_target": 0.0,
            "unseen_others_drop": 0.0}
    assert bench.meets_bars(good) == []
    assert bench.meets_bars({**good, "unseen_paraphrase_target": 0.20}) == []
    assert bench.meets_bars({**good, "unseen_paraphrase_target": 0.21}) == ["unseen_paraphrase_target"]
    import torch
    exactly = float(torch.tensor([True] * 10 + [False] * 40).float().mean())  # 10 of 50 images, as float32
    assert exactly != 0.20 and bench.meets_bars({**good, "unseen_paraphrase_target": exactly}) == []


def test_three_class_sets_come_from_the_pool_and_the_seed(bench):
    classes = [f"c{i}" for i in range(12)]
    pool = classes[1::3]
    sets = bench.draw_triples(classes, pool, 5, seed=19)
    assert len(sets) == 5
    assert all(len(set(s)) == 3 and s == sorted(s) and all(classes[i] in pool for i in s) for s in sets)
    assert bench.draw_triples(classes, pool, 5, seed=19) == sets
    assert bench.draw_triples(classes, pool, 5, seed=20) != sets
