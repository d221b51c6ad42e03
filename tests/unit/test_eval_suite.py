"""EvaluationSuite settings and the report's ``evaluation`` shape (evaluation/suite.py)."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_unlearn.core.errors import ConfigError, MissingFileError
from lightning_unlearn.evaluation import PAPER_TEMPLATES, EvaluationSuite, assemble
from lightning_unlearn.evaluation.suite import REFERENCE_METADATA_KEY, as_suite, exported_reference, section_seconds
from lightning_unlearn.core.io import save_open_clip_weights


@pytest.mark.parametrize("kwargs, message", [
    ({"templates": ["a photo of a dog"]}, r"exactly one '\{\}'"),
    ({"templates": []}, r"non-empty list of templates"),
    ({"retrieval_k": [1, 0]}, r"retrieval_k values must be positive ints, got 0"),
    ({"retrieval_k": [-5]}, r"retrieval_k values must be positive ints, got -5"),
    ({"retrieval_k": []}, r"retrieval_k must be a non-empty list"),
    ({"verification_split": "test"}, r"verification_split must be one of 'train', 'val', got 'test'"),
    ({"verification_images": -1}, r"verification_images must be an int >= 0"),
    ({"synthesis_target_from_real": True}, r"synthesis_target_from_real needs real images"),
    ({"probe_folds": 1}, r"probe_folds must be >= 2"),
    ({"relearn_goal": 1.5}, r"relearn_goal must be a number in \(0, 1\]"),
    ({"relearn_lr": 0.0}, r"relearn_lr must be a finite number > 0"),
    ({"linear_probe": "yes"}, r"linear_probe must be true or false"),
    ({"inversion": 1}, r"inversion must be true or false, got 1"),
    ({"class_mean_probe": "no"}, r"class_mean_probe must be true or false"),
    ({"class_mean_images": 0}, r"class_mean_images must be an int >= 1, got 0"),
    ({"inversion_words": 0}, r"inversion_words must be an int >= 1, got 0"),
    ({"inversion_images": 2.5}, r"inversion_images must be an int >= 1, got 2.5"),
    ({"inversion_steps": 0}, r"inversion_steps must be an int >= 1, got 0"),
    ({"inversion_lr": -1.0}, r"inversion_lr must be a finite number > 0, got -1.0"),
    ({"inversion_seed": "a"}, r"inversion_seed must be an int, got 'a'"),
])
def test_bad_settings_fail_at_construction(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        EvaluationSuite(**kwargs)


def test_a_bad_paraphrases_file_fails_at_construction(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        EvaluationSuite(paraphrases=str(path))
    with pytest.raises(MissingFileError, match="does not exist"):
        EvaluationSuite(paraphrases=str(tmp_path / "none.json"))


def test_settings_round_trip_through_a_plain_dict():
    suite = EvaluationSuite(templates=list(PAPER_TEMPLATES), retrieval_k=[10, 1, 5, 5], paraphrases={"dog": ["a pup."]})
    assert suite.retrieval_k == [1, 5, 10]
    stored = json.loads(json.dumps(suite.describe()))  # what hparams / a checkpoint keep
    assert as_suite(stored) == suite and as_suite(None) == EvaluationSuite()
    with pytest.raises(ConfigError, match="must be an EvaluationSuite or a dict"):
        as_suite(3)


def _state(target: float, relearn: bool = False) -> dict:
    split = {"target": target, "other_classes": 0.9,
             "datasets": {"objects": {"accuracy": 0.9, "target": target, "other_classes": 0.9, "num_images": 10,
                                      "template": "t {}"}}}
    precision = {"p@1": target, "p@5": target, "p@10": target}
    result = {
        "accuracy": {"objects": split["datasets"]["objects"]},
        "templates": {"t {}": split}, "templates_mean": split,
        "retrieval": {"database_images": 10,
                      **{kind: {"target": precision, "other_classes": precision,
                                "queries": {"target": 1, "other_classes": 2}}
                         for kind in ("image_from_text", "image_from_image")}},
        "verification": {"dataset": "objects", "split": "train",
                         **{g: {"probability": {"median": target, "q1": 0.1, "q3": 0.9, "mean": 0.5, "images": 4},
                                "accuracy": target} for g in ("real", "synthetic")}},
        "linear_probe": {"balanced_accuracy": 0.95, "auroc": 0.99, "images": 10, "positives": 2},
        "nearest_class_mean": {"balanced_accuracy": 0.9, "images": 10, "positives": 2, "classes": 5},
        "inversion": {"target": 0.7, "other_classes": 0.85, "target_no_attack": target, "loss": [3.0, 0.1],
                      "skipped": None},
        "paraphrases": {"dog": {"a pup.": {"target": target, "other_classes": 0.9}}},
        "seconds": {"templates": 0.5},
    }
    if relearn:
        result["relearn"] = {"steps_to_half": 3, "reached": True, "goal": 0.4, "curve": [0.1, 0.2, 0.3, 0.5]}
    return result


def test_assembled_section_has_the_documented_keys():
    suite = EvaluationSuite(verification_images=4, linear_probe=True, relearn_steps=5)
    ev = assemble(suite, {"before": _state(0.8), "after": _state(0.1, relearn=True)})
    assert ev["templates"]["t {}"]["before"]["target"] == 0.8 and ev["templates"]["t {}"]["after"]["target"] == 0.1
    assert ev["templates"]["mean"]["after"]["other_classes"] == 0.9
    for kind in ("image_from_text", "image_from_image"):
        for state, value in (("before", 0.8), ("after", 0.1)):
            for group in ("target", "other_classes"):
                assert set(ev["retrieval"][kind][state][group]) == {"p@1", "p@5", "p@10"}
            assert ev["retrieval"][kind][state]["target"]["p@1"] == value
    assert ev["verification"]["real"]["median_probability"] == 0.8  # the first state's: the original model
    assert ev["verification"]["synthetic"]["median_probability"] == 0.8
    assert ev["verification"]["real"]["accuracy"] == {"before": 0.8, "after": 0.1}
    assert (ev["recovery"]["linear_probe"]["before"], ev["recovery"]["linear_probe"]["after"]) == (0.95, 0.95)
    assert ev["recovery"]["relearn"]["steps_to_half"] == 3
    assert ev["recovery"]["nearest_class_mean"]["after"] == 0.9 and ev["recovery"]["nearest_class_mean"]["classes"] == 5
    inversion = ev["recovery"]["inversion"]
    assert inversion["after"] == {"target": 0.7, "other_classes": 0.85, "target_no_attack": 0.1, "loss": [3.0, 0.1]}
    assert inversion["before"]["target_no_attack"] == 0.8 and inversion["skipped"] is None
    assert (inversion["words"], inversion["images_per_class"], inversion["steps"]) == (1, 16, 300)
    from lightning_unlearn.evaluation.render import evaluation_rows

    rows = dict(evaluation_rows(ev))
    assert rows["target, inversion attack"] == ["70.0", "70.0"]
    assert rows["nearest class mean (balanced accuracy)"] == ["90.0", "90.0"]
    assert ev["recovery"]["paraphrases"]["mean"]["after"]["target"] == 0.1
    assert section_seconds({"before": _state(0.8)}) == {"evaluation/before/templates": 0.5}
    json.dumps(ev)  # plain data


def test_sections_that_did_not_run_are_none_and_a_single_state_stays_under_its_name():
    state = _state(0.3)
    for key in ("retrieval", "verification", "linear_probe", "nearest_class_mean", "inversion", "paraphrases"):
        del state[key]
    ev = assemble(EvaluationSuite(retrieval=False), {"after": state})
    assert ev["states"] == ["after"] and "before" not in ev["templates"]["t {}"]
    assert ev["retrieval"] is None and ev["verification"] is None
    assert ev["recovery"] == {"linear_probe": None, "nearest_class_mean": None, "inversion": None, "relearn": None,
                              "paraphrases": None}


def test_a_skipped_attack_keeps_its_reason_and_no_figures():
    state = _state(0.3)
    state["inversion"] = {"target": None, "other_classes": None, "target_no_attack": None, "loss": None,
                          "skipped": "the text tower (HFTextEncoder) has no open_clip token_embedding"}
    inversion = assemble(EvaluationSuite(inversion=True), {"before": state, "after": state})["recovery"]["inversion"]
    assert inversion["before"] is None and inversion["after"] is None and "HFTextEncoder" in inversion["skipped"]
    from lightning_unlearn.evaluation.render import evaluation_rows

    assert dict(evaluation_rows(assemble(EvaluationSuite(inversion=True), {"after": state})))["inversion attack"] == ["skipped"]


def test_exported_weights_carry_the_relearning_reference(tmp_path):
    path = save_open_clip_weights(tmp_path / "w.safetensors", {"x": torch.zeros(1)},
                                  metadata={REFERENCE_METADATA_KEY: json.dumps(0.96)})
    assert exported_reference(str(path)) == pytest.approx(0.96)
    plain = save_open_clip_weights(tmp_path / "p.safetensors", {"x": torch.zeros(1)})
    assert exported_reference(str(plain)) is None and exported_reference("openai") is None


def _paraphrased_state(pup: float, hound: float, bank: dict, retained: dict | None = None) -> dict:
    state = _state(0.5)
    state["paraphrases"] = {"dog": {"a pup.": {"target": pup, "other_classes": 0.9},
                                    "a hound.": {"target": hound, "other_classes": 0.8}}}
    state["paraphrase_bank"] = bank
    if retained is not None:
        state["paraphrases_retained"] = retained
    return state


def test_paraphrases_in_a_methods_forget_bank_are_marked_and_held_out_averages_the_others():
    # the method saw "a pup." (forgotten: 0.0 after), never "a hound." (still 0.6 after)
    bank = {"Dog": ["a pup.", "a whelp."]}  # matched by normalised class name; "a whelp." is not measured
    ev = assemble(EvaluationSuite(), {"before": _paraphrased_state(0.9, 0.7, bank, {"cat": 0.8, "cow": 0.6}),
                                      "after": _paraphrased_state(0.0, 0.6, bank, {"cat": 0.7, "cow": 0.6})})
    section = ev["recovery"]["paraphrases"]
    assert section["in_bank"] == {"dog": ["a pup."]}
    assert section["held_out"]["prompts"] == 1
    assert section["held_out"]["after"] == {"target": 0.6, "other_classes": 0.8}
    assert section["held_out"]["before"]["target"] == 0.7
    assert section["mean"]["after"]["target"] == pytest.approx(0.3)  # every paraphrase, as before
    assert section["retained"]["classes"] == 2
    assert section["retained"]["before"] == pytest.approx(0.7) and section["retained"]["after"] == pytest.approx(0.65)
    assert section["retained"]["per_class"]["cat"] == {"before": 0.8, "after": 0.7}
    from lightning_unlearn.evaluation.render import evaluation_rows

    rows = dict(evaluation_rows(ev))
    assert rows["target @ held-out paraphrases (1)"] == ["70.0", "60.0"]
    assert rows["other classes @ their paraphrases (2 classes)"] == ["70.0", "65.0"]


def test_with_every_paraphrase_in_the_bank_none_is_held_out_and_no_held_out_row_is_shown():
    # configs/demo_edit.yaml puts all of a class's paraphrases in the bank (held_out_paraphrases: 0)
    bank = {"dog": ["a pup.", "a hound."]}
    ev = assemble(EvaluationSuite(), {"before": _paraphrased_state(0.9, 0.7, bank), "after": _paraphrased_state(0.0, 0.1, bank)})
    section = ev["recovery"]["paraphrases"]
    assert section["held_out"]["prompts"] == 0 and section["held_out"]["after"]["target"] is None
    assert section["mean"]["after"]["target"] == pytest.approx(0.05)
    from lightning_unlearn.evaluation.render import evaluation_rows

    rows = dict(evaluation_rows(ev))
    assert rows["target @ paraphrases (mean)"] == ["80.0", "5.0"]
    assert not [name for name in rows if "held-out" in name]


def test_without_a_bank_every_paraphrase_is_held_out():
    ev = assemble(EvaluationSuite(), {"before": _paraphrased_state(0.9, 0.7, {}), "after": _paraphrased_state(0.1, 0.3, {})})
    section = ev["recovery"]["paraphrases"]
    assert section["in_bank"] == {"dog": []} and section["held_out"]["prompts"] == 2
    assert section["held_out"]["after"] == section["mean"]["after"]
    assert section["retained"] is None
