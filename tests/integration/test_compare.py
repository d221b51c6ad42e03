"""``lightning-unlearn compare`` end to end, reduced: 2 methods x 1 class on a tiny random-init CLIP
and tiny fake copies of two paper datasets (4 classes each, one image per class and split)."""

from __future__ import annotations

import csv
import json
import re
import signal
import sys
from pathlib import Path

import pytest
import yaml

from lightning_unlearn import compare
from lightning_unlearn.cli import console_main

from fake_datasets import fit_config, make_caltech, make_dogs

pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A data root with fake Stanford Dogs and Caltech101 (paper layouts), a fit config and a
    compare config naming it."""
    root = tmp_path_factory.mktemp("compare")
    make_dogs(root / "data", "paper")
    make_caltech(root / "data", "paper")
    (root / "fit.yaml").write_text(yaml.safe_dump(fit_config(root / "data")))
    (root / "compare.yaml").write_text(yaml.safe_dump({
        "fit_configs": [str(root / "fit.yaml")], "methods": ["lip"], "classes": ["Pekinese"], "seeds": [0],
        "out": str(root / "unused"), "real_data": {"images_per_class": 4}, "export": True,
    }))
    return root


def _rows(out: Path) -> list[dict]:
    with (out / "compare.csv").open() as f:
        return list(csv.DictReader(f))


def test_reduced_comparison_writes_the_table_and_resumes(world, capsys, monkeypatch):
    out = world / "out"
    console_main(["compare", "--config", str(world / "compare.yaml"), "--methods", "[lip, amns_retain]",
                  "--classes", "[pekinese]", "--seeds", "[0]", "--out", str(out)])
    rows = _rows(out)
    assert [(r["method"], r["class"], r["seed"], r["zero_shot"], r["status"]) for r in rows] == [
        ("lip", "Pekinese", "0", "ZS", "ok"), ("amns_retain", "Pekinese", "0", "not ZS", "ok")]
    header = list(rows[0])
    assert header[:8] == ["method", "class", "seed", "zero_shot", "target_bf", "target_af", "other_bf", "other_af"]
    assert header[8:10] == ["caltech101_bf", "caltech101_af"] and "stanford_dogs_bf" not in header
    for row in rows:
        for key in ("target_bf", "target_af", "other_bf", "other_af", "caltech101_af", "real_valid_af", "seconds"):
            assert 0 <= float(row[key]) <= (1 if key != "seconds" else 600), (key, row)
    assert rows[0]["synthetic_af"] != "" and rows[1]["synthetic_af"] == ""  # amns_retain: real forget images
    for row in rows:
        run = out / row["method"] / "pekinese" / "seed0"
        report = json.loads((run / "report.json").read_text())
        assert (run / "unlearned.safetensors").is_file() and report["method"]["zero_shot"] == row["zero_shot"]
        history = report["real_valid_history"]
        assert history and all(0 <= v <= 1 for v in history)  # measured at every epoch end
        assert report["after"]["real_valid_acc"] == pytest.approx(float(row["real_valid_af"]), abs=1e-4)
    markdown = (out / "compare.md").read_text()
    assert "| stanford_dogs | lip | ZS | 1/1 |" in markdown and "| stanford_dogs | amns_retain | not ZS | 1/1 |" in markdown
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"

    # Run again: every run is finished, so none is executed.
    def no_run(*args, **kwargs):
        raise AssertionError("a finished run was executed again")

    monkeypatch.setattr(compare, "execute_run", no_run)
    capsys.readouterr()
    console_main(["compare", "--config", str(world / "compare.yaml"), "--methods", "[lip, amns_retain]",
                  "--classes", "[Pekinese]", "--out", str(out)])
    assert "Resuming: 2 of 2 runs already finished" in capsys.readouterr().out
    assert _rows(out) == rows


def test_failed_run_is_recorded_and_the_comparison_goes_on(world):
    out = world / "failing"
    settings = compare.CompareSettings(methods=["amns", "one_iter"], classes=["Pekinese"], seeds=[1],
                                       out=str(out), fit_configs=[str(world / "fit.yaml")], export=False,
                                       overrides={"amns": {"model.init_args.lr": -1.0}})
    compare.run_comparison(settings)
    failed, ok = _rows(out)
    assert failed["status"] == "failed" and "lr must be a finite number > 0, got -1.0" in failed["error"]
    assert failed["target_af"] == "" and failed["zero_shot"] == "ZS"
    assert ok["status"] == "ok" and ok["steps"] == "1" and float(ok["target_af"]) >= 0
    assert not (out / "one_iter" / "pekinese" / "seed1" / "unlearned.safetensors").exists()  # export: false
    assert not (out / "one_iter" / "pekinese" / "seed1" / "unlearned").exists()
    assert "amns / Pekinese / seed 1: ConfigError: lr must be" in (out / "compare.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--methods", "[lip, amnesiac]"], r"unknown method 'amnesiac'; close matches: 'amns'"),
    (["--classes", "[Pekingese]"], r"unknown class 'Pekingese' in dataset 'stanford_dogs'; close matches: 'Pekinese'"),
    (["--out", "{world}/compare.yaml/out"], r"out '.*compare.yaml/out' cannot be a folder: .* is a file"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(world, args, message, capsys):
    out = world / "bad"
    args = [a.replace("{world}", str(world)) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        console_main(["compare", "--config", str(world / "compare.yaml"), "--out", str(out), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lightning-unlearn: error: ")
    assert re.search(message, err[0]), err
    assert not out.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_whole_comparison_and_resume_reruns_the_interrupted_run(world, monkeypatch, capsys, signum):
    """Ctrl+C / SIGTERM during a run used to become that run's "failed" row (Lightning ends the fit
    with an exit) and the comparison went on; now it stops, keeping the runs finished before."""
    import lightning_unlearn.trainer_cli as trainer_cli

    out = world / f"stopped_{signum.name}"
    settings = compare.CompareSettings(methods=["amns", "one_iter", "lip"], classes=["Pekinese"], seeds=[0],
                                       out=str(out), fit_configs=[str(world / "fit.yaml")], export=False)
    calls: list[str] = []

    def fit_that_is_signalled(args, quiet=False):
        calls.append(Path(args[2]).parent.parent.parent.name)  # the method's folder
        if len(calls) == 1:
            raise ValueError("the first run fails by itself")
        try:  # what Lightning does with the signal: it ends the fit with an exit of its own
            signal.raise_signal(signum)
        except KeyboardInterrupt:
            sys.exit(1)
        pytest.fail("the signal did not interrupt the run")

    before = signal.getsignal(signum)
    monkeypatch.setattr(trainer_cli, "main", fit_that_is_signalled)
    with pytest.raises(SystemExit) as stop:
        compare.run_comparison(settings)
    assert stop.value.code == 128 + signum and calls == ["amns", "one_iter"]  # lip never started
    assert signal.getsignal(signum) is before
    assert f"Comparison stopped by {signum.name} after 1 of 3 runs" in capsys.readouterr().out
    assert [(r["method"], r["status"]) for r in _rows(out)] == [("amns", "failed")]
    assert not (out / "one_iter" / "pekinese" / "seed0" / compare.RUN_FILE).exists()  # unfinished, not failed

    calls.clear()
    monkeypatch.setattr(trainer_cli, "main", lambda args, quiet=False: calls.append(args) or sys.exit(2))
    compare.run_comparison(settings)  # resume: every run not finished ok runs again, to the end
    assert len(calls) == 3 and [r["status"] for r in _rows(out)] == ["failed"] * 3
