"""The comparison's pure parts: checks before any run, run configs, rows, compare.csv/md/png."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from lightning_unlearn.compare import (
    CompareSettings,
    fingerprint_line,
    finished_row,
    failed_row,
    plan_comparison,
    render_csv,
    render_markdown,
    render_plot,
    row_from_report,
    run_config,
    slug,
)
from lightning_unlearn.core.errors import ConfigError, OutputError, UnknownNameError

from fake_datasets import make_caltech, make_dogs


def fit(root: Path, **model) -> dict:
    return {
        "model": {"class_path": "lightning_unlearn.UnlearningModule", "init_args": {
            "model_name": "tiny-vit", "pretrained": None, "forget_dataset": "stanford_dogs", **model}},
        "data": {"class_path": "lightning_unlearn.datamodules.SyntheticForgetDataModule",
                 "init_args": {"datasets": {"stanford_dogs": str(root), "caltech101": str(root)}}},
        "trainer": {"callbacks": [{"class_path": "lightning_unlearn.callbacks.GradientLayerSelection"},
                                  {"class_path": "lightning_unlearn.callbacks.UnlearningReport",
                                   "init_args": {"export_name": "w.safetensors"}}]},
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    make_dogs(root / "data", "paper")
    make_caltech(root / "data", "paper")
    make_caltech(root / "standard", "standard")  # torchvision's layout: a test split only
    (root / "fit.yaml").write_text(yaml.safe_dump(fit(root / "data")))
    return root


def settings(world: Path, **kwargs) -> CompareSettings:
    args = dict(methods=["lip", "amns_retain"], classes=["Pekinese", "toy_poodle"], seeds=[0, 1],
                out=str(world / "out"), fit_configs=[str(world / "fit.yaml")])
    args.update(kwargs)
    return CompareSettings(**args)


def report(target: tuple, other: tuple, caltech: tuple, kind: str = "synthetic", attacked: float | None = None,
           paraphrased: tuple | None = None) -> dict:
    def measure(i):
        return {"synthetic_acc": 0.5 * i, "real_valid_acc": 0.25 * (i + 1), "target": target[i],
                "other_classes": other[i], "datasets": {"stanford_dogs": {"accuracy": 0.5},
                                                         "caltech101": {"accuracy": caltech[i]}}}
    inversion = None if attacked is None else {"before": {"target": 1.0}, "after": {"target": attacked}}
    # paraphrased: (target before, target after on held-out paraphrases, other classes before, after)
    paraphrases = None if paraphrased is None else {
        "mean": {"before": {"target": 0.99}, "after": {"target": 0.99}},  # over every paraphrase: not the column
        "held_out": {"prompts": 3, "before": {"target": paraphrased[0], "other_classes": 0.5},
                     "after": {"target": paraphrased[1], "other_classes": 0.5}},
        "retained": {"classes": 2, "before": paraphrased[2], "after": paraphrased[3]}}
    return {"method": {"zero_shot": "ZS"}, "before": measure(0), "after": measure(1), "forget_set": {"kind": kind},
            "optimizer_steps": 7, "stop_reason": "goal_reached",
            "evaluation": {"recovery": {"inversion": inversion, "paraphrases": paraphrases}}}


def test_plan_lists_every_run_with_its_folder_and_columns(world):
    plan = plan_comparison(settings(world))
    assert [(r.method, r.cls, r.seed) for r in plan.runs] == [
        (m, c, s) for c in ("Pekinese", "toy poodle") for s in (0, 1) for m in ("lip", "amns_retain")]
    assert plan.runs[1].directory == world / "out" / "amns_retain" / "pekinese" / "seed0"
    assert plan.other_datasets == ["caltech101"]
    assert plan.columns[8:10] == ["caltech101_bf", "caltech101_af"]
    assert plan.columns[-8:] == ["synthetic_af", "real_valid_af", "steps", "seconds", "forget_dataset",
                                 "stop_reason", "status", "error"]
    assert not (world / "out").exists()  # planning writes nothing


def test_run_config_sets_class_seed_outputs_and_overrides(world):
    s = settings(world, export=False, real_data={"images_per_class": 3},
                 overrides={"*": {"model.init_args.lr": 0.01}, "amns_retain": {"model.init_args.lr": 0.02}})
    plan = plan_comparison(s)
    lip, retain = plan.runs[2], plan.runs[3]  # Pekinese, seed 1
    config = run_config(s, lip)
    model, data, trainer = config["model"]["init_args"], config["data"]["init_args"], config["trainer"]
    assert model["forget_classes"] == ["Pekinese"] and model["noise_seed"] == 1 and config["seed_everything"] == 1
    assert data["seed"] == 1 and data["progress"] is False and "images_per_class" not in data
    assert trainer["logger"]["init_args"] == {"save_dir": str(lip.directory), "name": "", "version": ""}
    assert trainer["enable_checkpointing"] is False and model["lr"] == 0.01
    report_args = trainer["callbacks"][-1]["init_args"]
    assert report_args == {"export_name": None, "export_dir": None, "output_dir": str(lip.directory),
                           "print_table": False}
    assert "seed" not in model["method"].get("init_args", {})  # MultimodalLipschitz takes no seed
    other = run_config(s, retain)
    assert other["model"]["init_args"]["lr"] == 0.02 and other["data"]["init_args"]["images_per_class"] == 3
    assert other["data"]["class_path"].endswith("RealForgetDataModule")


def test_rows_csv_and_markdown(world):
    plan = plan_comparison(settings(world, methods=["lip"], seeds=[0]))
    first, second = plan.runs
    rows = [row_from_report(first, report((0.8, 0.2), (0.6, 0.5), (0.9, 0.8), attacked=0.9,
                                          paraphrased=(0.4, 0.3, 0.7, 0.65)), plan.other_datasets),
            row_from_report(second, report((0.6, 0.0), (0.6, 0.6), (0.9, 0.9), kind="real"), plan.other_datasets)]
    rows[0]["seconds"], rows[1]["seconds"] = 10.0, 20.0
    assert rows[0]["caltech101_af"] == 0.8 and rows[0]["synthetic_af"] == 0.5 and rows[1]["synthetic_af"] is None
    table = list(csv.DictReader(io.StringIO(render_csv(plan, rows))))
    # the attack's column: the run that measured it, empty for the one that did not
    assert table[0]["target_attacked_af"] == "0.9" and table[1]["target_attacked_af"] == ""
    # the paraphrase columns: held-out paraphrases of the target, the other classes under theirs
    assert [table[0][k] for k in ("target_paraphrased_bf", "target_paraphrased_af", "other_paraphrased_bf",
                                  "other_paraphrased_af")] == ["0.4", "0.3", "0.7", "0.65"]
    assert table[1]["target_paraphrased_af"] == "" and table[1]["other_paraphrased_af"] == ""
    assert table[1]["synthetic_af"] == "" and table[1]["real_valid_af"] == "0.5" and table[0]["steps"] == "7"
    markdown = render_markdown(plan, rows, seconds=90)
    # means over the two classes: target 70.0 -> 10.0 (attacked 90.0, one run), other 60.0 -> 55.0, caltech 90.0 -> 85.0
    assert ("| target BF | target AF | target attacked | target paraphrased BF | target paraphrased AF | other BF "
            "| other AF | other paraphrased BF | other paraphrased AF |") in markdown
    assert ("| stanford_dogs | lip | ZS | 2/2 | 70.0 | 10.0 | 90.0 | 40.0 | 30.0 | 60.0 | 55.0 | 70.0 | 65.0 | 90.0 "
            "| 85.0 | 50.0 | 50.0 | 7 | 15 |") in markdown
    assert "wall time 1.5 min" in markdown
    # the console's summary adds the paraphrase columns when a run measured them
    from rich.console import Console

    from lightning_unlearn.compare import summary_table

    console = Console(width=250, record=True)
    console.print(summary_table(plan, rows))
    text = console.export_text()
    assert "target paraphrased" in text and "40.0 -> 30.0" in text and "70.0 -> 65.0" in text
    console = Console(width=250, record=True)
    console.print(summary_table(plan, rows[1:]))
    assert "paraphrased" not in console.export_text()
    # a console too narrow for the wide layout (a log file: 80 columns) gets the long one, every number whole
    console = Console(width=80, record=True)
    console.print(summary_table(plan, rows, width=80))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "lip (ZS)" in text and "target paraphrased" in text and "caltech101" in text
    cells = [[c.strip() for c in line.split("│")[-3:-1]] for line in text.splitlines() if "target paraphrased" in line]
    assert cells == [["40.0", "30.0"]]
    assert "seconds per run" in text and " 15 " in text
    console = Console(width=250, record=True)
    console.print(summary_table(plan, rows, width=250))
    assert "40.0 -> 30.0" in console.export_text()
    console = Console(width=80, record=True)  # a method whose runs all failed is still named in the long layout
    console.print(summary_table(plan, [{**failed_row(r, "boom"), "seconds": 1.0} for r in (first, second)], width=30))
    assert "lip (ZS, 0/2 runs)" in console.export_text()
    rows[1] = {**failed_row(second, "ConfigError: boom"), "seconds": 1.0}
    markdown = render_markdown(plan, rows)
    assert "| 1/2 | 80.0 | 20.0 | 90.0 |" in markdown and "- lip / toy poodle / seed 0: ConfigError: boom" in markdown
    render_plot(plan, rows, world / "plot" / "compare.png")
    assert (world / "plot" / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_the_starting_weights_fingerprint_is_kept_per_run_and_printed_once(world):
    plan = plan_comparison(settings(world, methods=["lip"], seeds=[0]))
    first, second = plan.runs
    rows = []
    for run in (first, second):
        finished = report((0.8, 0.2), (0.6, 0.5), (0.9, 0.8))
        finished["model"] = {"name": "RN50", "pretrained": "openai", "fingerprint": "0123456789abcdef"}
        rows.append(row_from_report(run, finished, plan.other_datasets))
    assert rows[0]["model_fingerprint"] == "0123456789abcdef"
    assert "fingerprint" not in render_csv(plan, rows).splitlines()[0]  # not a compare.csv column
    line = fingerprint_line(rows + [None, failed_row(second, "ConfigError: boom")])
    assert line.startswith("Weights fingerprint before unlearning: RN50 0123456789abcdef (") and line.count("RN50") == 1
    assert fingerprint_line([failed_row(second, "ConfigError: boom")]) is None


def test_a_finished_run_is_reused_only_with_the_same_config(world, tmp_path):
    s = settings(world, methods=["lip"], classes=["Pekinese"], seeds=[0], out=str(tmp_path / "out"))
    run = plan_comparison(s).runs[0]
    config = run_config(s, run)
    run.directory.mkdir(parents=True)
    (run.directory / "run_config.yaml").write_text(yaml.safe_dump(config))
    (run.directory / "run.json").write_text(json.dumps({"status": "ok", "method": "lip"}))
    assert finished_row(run, config) is None  # no report.json
    (run.directory / "report.json").write_text("{}")
    assert finished_row(run, config) == {"status": "ok", "method": "lip"}
    changed = {**config, "seed_everything": 5}
    assert finished_row(run, changed) is None


def test_slug():
    assert slug("toy poodle") == "toy_poodle" and slug("2009 Spyker C8 Coupe") == "2009_spyker_c8_coupe"


@pytest.mark.parametrize("kwargs, error, message", [
    ({"methods": ["lip", "ulip_rael"]}, UnknownNameError, r"unknown method 'ulip_rael'; close matches: 'ulip_real'"),
    ({"methods": ["lip", "lip"]}, ConfigError, r"methods lists 'lip' twice"),
    ({"classes": ["Pekingese"]}, UnknownNameError, r"unknown class 'Pekingese' in dataset 'stanford_dogs'; close "
                                                   r"matches: 'Pekinese'"),
    ({"classes": ["euphonium"]}, UnknownNameError, r"it is a class of 'caltech101'"),
    ({"seeds": [-1]}, ConfigError, r"seeds must be ints >= 0, got -1"),
    ({"classes": ["Pekinese", "pekinese"]}, ConfigError, r"classes names 'Pekinese' twice \(as \['Pekinese', 'pekinese'\]\)"),
    ({"overrides": {"lipp": {}}}, UnknownNameError, r"overrides: unknown method 'lipp'; close matches: 'lip'"),
    ({"overrides": {"lip": {"trainer.callbacks.Nope.init_args.x": 1}}}, ConfigError, r"no 'Nope' in trainer.callbacks"),
    ({"overrides": {"lip": {"model.init_args.method.init_args.nope": 1}}}, ConfigError,
     r"method 'lip': bad init args"),
])
def test_bad_settings_fail_before_anything_is_written(world, kwargs, error, message):
    with pytest.raises(error, match=message):
        plan_comparison(settings(world, **kwargs))
    assert not (world / "out").exists()


@pytest.mark.filterwarnings("ignore:Caltech101. torchvision's layout has no splits")
def test_real_methods_need_the_train_split(world, tmp_path):
    config = fit(world / "standard", forget_dataset="caltech101")
    config["data"]["init_args"]["datasets"] = {"caltech101": str(world / "standard")}
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    s = settings(world, methods=["lip", "ulip_real"], classes=["euphonium"], fit_configs=[str(tmp_path / "fit.yaml")])
    with pytest.raises(ConfigError, match=r"method 'ulip_real' \(semi ZS\) needs real 'train' images of 'euphonium'"):
        plan_comparison(s)
    assert plan_comparison(settings(world, methods=["lip"], classes=["euphonium"], seeds=[0],
                                    fit_configs=[str(tmp_path / "fit.yaml")])).runs  # synthetic: fine


def test_real_methods_need_a_dataset_vocabulary(world, tmp_path):
    config = fit(world / "data", forget_dataset=None, vocabulary=["cat", "dog", "car"])
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"method 'lip_real' \(semi ZS\) needs real images of 'dog' from a dataset"):
        plan_comparison(settings(world, methods=["lip_real"], classes=["dog"], fit_configs=[str(tmp_path / "fit.yaml")]))


def test_the_plan_reads_class_names_without_building_datasets(world, monkeypatch):
    from lightning_unlearn.datamodules import EvaluationDataModule

    monkeypatch.setattr(EvaluationDataModule, "build_dataset", lambda *a, **k: pytest.fail("built a dataset"))
    plan = plan_comparison(settings(world, methods=["lip"]))  # real-image methods build their split
    assert [(r.cls, r.spec.dataset) for r in plan.runs] == [("Pekinese", "stanford_dogs")] * 2 + [
        ("toy poodle", "stanford_dogs")] * 2
    assert plan.runs[0].fit.vocabularies["caltech101"].classnames[:2] == ("face", "airplane")


def test_a_missing_dataset_root_fails_as_building_the_dataset_does(world, tmp_path):
    from lightning_unlearn.datasets import DatasetLayoutError, get_dataset_factory

    absent = tmp_path / "absent"
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(fit(absent)))
    with pytest.raises(DatasetLayoutError) as built:  # the first dataset of the (sorted) yaml
        get_dataset_factory("caltech101")(str(absent))
    with pytest.raises(DatasetLayoutError) as err:
        plan_comparison(settings(world, fit_configs=[str(tmp_path / "fit.yaml")]))
    assert str(err.value) == str(built.value)
    assert str(err.value).splitlines()[0] == f"Caltech101: missing {str(absent)!r} (the root folder itself)."
    assert not (world / "out").exists()


def test_out_that_is_a_file_or_not_writable(world, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"out .* cannot be a folder"):
        plan_comparison(settings(world, out=str(tmp_path / "file" / "out")))
    with pytest.raises(OutputError, match=r"out .*file' cannot be a folder"):
        plan_comparison(settings(world, out=str(tmp_path / "file")))


@pytest.mark.parametrize("name", ["demo_compare", "rn50_compare", "demo_side_by_side"])
def test_shipped_compare_configs_parse(name):
    from lightning_unlearn.cli import resolve_config
    from lightning_unlearn.compare import build_parser, load_fit_config
    from lightning_unlearn.presets import PRESETS

    parsed = build_parser().parse_args(["--config", resolve_config(name)]).as_dict()
    s = CompareSettings(**{k: v for k, v in parsed.items() if k in CompareSettings.__dataclass_fields__})
    assert set(s.methods) <= set(PRESETS) and len(s.methods) == {"demo_side_by_side": 2, "rn50_compare": 10,
                                                                 "demo_compare": len(PRESETS)}[name]  # every method
    assert all(load_fit_config(fit)["model"] for fit in s.fit_configs)
    if name == "demo_side_by_side":  # make demo: the paper's method and the edit, each run shown
        assert s.methods == ["lip", "edit"] and s.show_runs and s.classes == ["anchor"]
    elif name == "demo_compare":
        from lightning_unlearn.demo.world import CLASSES

        assert set(s.classes) <= set(CLASSES["objects"])
        assert s.methods == list(PRESETS)  # every method compare knows, in the presets' order
        # every run's overrides name settings the fit config has (a typo would add an unknown key)
        fit = load_fit_config(s.fit_configs[0])
        for dotted in s.overrides["*"]:
            *parents, leaf = dotted.split(".")
            section = fit
            for key in parents:
                section = section[key]
            assert leaf in section, dotted
    else:  # the paper's 12 classes, each named in the header of exactly one dataset's config
        texts = [Path(resolve_config(fit)).read_text() for fit in s.fit_configs]
        assert len(s.classes) == 12 and all(sum(c in t for t in texts) == 1 for c in s.classes), s.classes


def test_compare_flags_override_the_config(tmp_path):
    from lightning_unlearn.cli import resolve_config
    from lightning_unlearn.compare import build_parser

    parsed = build_parser().parse_args(["--config", resolve_config("demo_compare"), "--methods", "[lip, emb, amns]",
                                        "--classes", "[kite]", "--seeds", "[3, 4]", "--out", str(tmp_path)])
    assert (parsed.methods, parsed.classes, parsed.seeds, parsed.out) == (["lip", "emb", "amns"], ["kite"], [3, 4],
                                                                          str(tmp_path))
    assert parsed.real_data["images_per_class"] == 64  # the rest comes from the config


def test_run_config_seeds_a_method_that_takes_a_seed(world):
    s = settings(world, methods=["edit"], classes=["Pekinese"], seeds=[4])
    run = plan_comparison(s).runs[0]
    config = run_config(s, run)
    assert config["model"]["init_args"]["method"]["init_args"]["seed"] == 4
    assert config["data"]["class_path"].endswith("EvaluationDataModule")


def test_resume_finds_runs_whether_out_was_given_relative_or_absolute(world, tmp_path, monkeypatch):
    """A comparison started with ``--out runs/x`` and resumed with its absolute path (or the other
    way round) used to run everything again: the saved configs spell the run folder differently."""
    from lightning_unlearn.compare import RUN_CONFIG, RUN_FILE, finished_row, plan_comparison, run_config

    monkeypatch.chdir(tmp_path)
    relative = settings(world, out="runs/x", methods=["lip"], classes=["Pekinese"], seeds=[0])
    absolute = settings(world, out=str(tmp_path / "runs" / "x"), methods=["lip"], classes=["Pekinese"], seeds=[0])
    for first, then in ((relative, absolute), (absolute, relative)):
        run = plan_comparison(first).runs[0]
        run.directory.mkdir(parents=True, exist_ok=True)
        (run.directory / RUN_CONFIG).write_text(yaml.safe_dump(json.loads(json.dumps(run_config(first, run)))))
        (run.directory / RUN_FILE).write_text(json.dumps({"status": "ok", "method": "lip"}))
        (run.directory / "report.json").write_text("{}")
        again = plan_comparison(then).runs[0]
        assert finished_row(again, run_config(then, again)) == {"status": "ok", "method": "lip"}
        changed = settings(world, out=then.out, methods=["lip"], classes=["Pekinese"], seeds=[0],
                           overrides={"lip": {"model.init_args.lr": 1.0e-3}})
        assert finished_row(again, run_config(changed, again)) is None  # another config: run again
