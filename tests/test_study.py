"""The study machinery end to end (--quick: tiny nets, a subset; checks wiring, not numbers)."""

import json
import shutil
from pathlib import Path

import pytest

from verydeep.cli import main
from verydeep.study.plan import StudySpec, build_plan
from verydeep.study.report import verdict
from verydeep.study.tables import ensemble_error

ROOT = Path(__file__).resolve().parents[1]


def test_plan_follows_the_papers_chain():
    runs = {r.name: r for r in build_plan(StudySpec())}
    assert runs["A-256"].after == "" and runs["A-256"].init_from_a == ""
    # A-LRN has A's depth: the paper trains it from random weights, like A (not from net A)
    assert runs["A-LRN-256"].init_from_a == "" and runs["A-LRN-256"].after == ""
    assert all(runs[f"{c}-256"].init_from_a == "A-256" for c in ("B", "C", "D", "E"))
    assert all(runs[f"{c}-384"].after == f"{c}-256" for c in ("A", "B", "C", "D", "E"))
    assert runs["E-jit"].scale == [256, 512] and runs["E-jit"].after == "E-384"
    assert runs["D-256-glorot"].init_from_a == ""


def test_extra_runs_join_the_plan_and_are_checked():
    extra = [{"name": "D-long", "arch": "D_bn", "set": ["train.epochs=40"]}]
    runs = {r.name: r for r in build_plan(StudySpec(extra=extra))}
    assert runs["D-long"].group == "extra" and runs["D-long"].overrides == ["train.epochs=40"]
    assert runs["D-long"].scale == [256]
    quick = {r.name: r for r in build_plan(StudySpec(extra=extra, quick=True, scratch_epochs=1))}
    assert quick["D-long"].overrides[-1] == "train.epochs=1"  # --quick keeps its budget
    with pytest.raises(ValueError, match="run names repeat: \\['A-256'\\]"):
        build_plan(StudySpec(extra=[{"name": "A-256", "arch": "A"}]))
    with pytest.raises(ValueError, match="a run needs name and arch"):
        StudySpec(extra=[{"name": "x", "arch": "D", "epochs": 3}])


def test_verdicts_respect_noise():
    assert verdict(0.10, 0.05, 0.01) == "holds"
    assert verdict(0.05, 0.10, 0.01) == "reversed"
    assert verdict(0.05, 0.06, 0.01) == "noise"


def test_ensemble_error_is_posterior_average():
    import torch

    labels = torch.tensor([0, 1])
    a = {"probs": torch.tensor([[0.6, 0.4], [0.6, 0.4]])}
    b = {"probs": torch.tensor([[0.3, 0.7], [0.1, 0.9]])}
    res = {n: {"eval": {"k": v, "labels": labels}} for n, v in (("a", a), ("b", b))}
    # averages: [0.45, 0.55] (wrong for label 0), [0.35, 0.65] (right)
    assert ensemble_error(res, ["a", "b"], "k") == (0.5, 0.0)


def test_targets_are_chosen_by_validation_error_not_test_error():
    import torch

    from verydeep.study.plan import Run
    from verydeep.study.report import targets as _targets

    targets = lambda results: _targets(results, StudySpec())  # noqa: E731

    labels = torch.tensor([0, 1, 1, 0])
    right = torch.eye(2)[labels]
    wrong = torch.eye(2)[1 - labels]
    half = torch.cat([right[:2], wrong[2:]])

    def res(probs, val):
        ev = {"multi/dense": {"top1_err": float((probs.argmax(1) != labels).float().mean()), "probs": probs}}
        return {"run": Run("x", "D", [256], []), "eval": {**ev, "labels": labels}, "val_err": val}

    # "E" is perfect on test but "D" had the lower validation error: D is the single net
    lines = targets({"D": res(half, 0.05), "E": res(right, 0.06), "C": res(wrong, 0.07)})
    assert lines[0].startswith("- single net: D (") and "**50.00%**" in lines[0] and "missed" in lines[0]
    assert lines[1].startswith("- ensemble: D + E (") and "**75.00%**" in lines[1]  # one tie goes to class 0
    lines = targets({"D": res(half, 0.07), "E": res(right, 0.06), "C": res(wrong, 0.065)})
    assert lines[0].startswith("- single net: E (") and "**100.00%**" in lines[0] and "met" in lines[0]
    assert lines[1].startswith("- ensemble: E + C (")


@pytest.mark.slow
def test_quick_study_end_to_end(fmnist_root, tmp_path):
    report = tmp_path / "RESULTS.md"
    args = ["study", "--quick", "--no-progress", "--config", str(ROOT / "experiments" / "study.toml")]
    args += ["--results-dir", str(tmp_path / "results")]
    assert main([*args, "--out-dir", str(tmp_path / "runs"), "--report", str(report)]) == 0
    text = report.read_text()
    for heading in (
        "Table 3 analogue",
        "Table 4 analogue",
        "Table 5 analogue",
        "Table 6 analogue",
        "findings",
    ):
        assert heading in text
    assert (tmp_path / "RESULTS_curves.png").stat().st_size > 1000
    doc = json.loads((tmp_path / "RESULTS.json").read_text())
    numbers = doc["runs"]
    assert set(doc["targets"]) >= {"single", "ensemble"} and doc["targets"]["single"]["target"] == 0.945
    assert 0 <= numbers["D-jit"]["val_err"] <= 1 and numbers["E-jit"]["cpu_s"] > 0
    assert "- single net: " in text and "target 94.5%" in text
    assert set(numbers) >= {"A-256", "D-jit", "E-jit", "D-256-glorot"}
    extras = [e["name"] for e in StudySpec.from_toml(ROOT / "experiments" / "study.toml").extra]
    assert extras and set(extras) <= set(numbers) and "Beyond the grid" in text
    assert 0 <= numbers["D-jit"]["multi/dense+multicrop"]["top1_err"] <= 1
    # resumable: a second run trains nothing and gives the same report
    assert main([*args, "--out-dir", str(tmp_path / "runs"), "--report", str(report)]) == 0
    assert report.read_text() == text and "Not finished yet" not in text
    # --report-only on an unfinished study: reports what is done, trains and evaluates nothing
    (tmp_path / "results" / "E-jit" / "eval.json").unlink()
    assert main([*args, "--out-dir", str(tmp_path / "runs"), "--report", str(report), "--report-only"]) == 0
    assert "**Not finished yet** (this report covers the runs done so far): E-jit." in report.read_text()
    assert not (tmp_path / "results" / "E-jit" / "eval.json").exists()


def test_ensemble_table_lists_a_combination_once():
    import torch

    from verydeep.study.plan import Run
    from verydeep.study.tables import ensemble_table

    labels = torch.tensor([0, 1])
    ev = {"multi/dense": {"probs": torch.eye(2)[labels], "top1_err": 0.0}, "labels": labels}

    def res(group, val):
        return {"run": Run("x", "D_bn", [256], [], group=group), "eval": ev, "val_err": val}

    results = {"A-256": res("main", 0.2), "X": res("extra", 0.1), "Y": res("extra", 0.05)}
    rows = [r for r in ensemble_table(results) if r.startswith("| ") and "top-1" not in r]
    # the targets' pair (Y, X) is also the pair of the extra runs: one row, not two
    assert [r.split(" | ")[0] for r in rows] == ["| Y+X", "| A-256", "| A-256+X+Y"]


def test_estimate_scales_measured_steps_to_the_plan(fmnist_root, tmp_path, capsys):
    args = ["study", "--quick", "--estimate", "--config", str(ROOT / "experiments" / "study.toml")]
    assert main([*args, "--out-dir", str(tmp_path), "--only", "A-256,D-jit"]) == 0
    est = json.loads((tmp_path / "estimate.json").read_text())
    runs = {r["name"]: r for r in est["runs"]}
    assert set(runs) == {"A-256", "D-jit"}  # trains nothing, needs no finished runs
    # --quick: 640 images, 10% held out, batch 64 -> 576 // 64 = 9 steps, 1 epoch
    assert runs["A-256"]["steps_per_epoch"] == 9 and runs["A-256"]["epochs"] == 1
    for r in runs.values():
        assert r["train_s"] >= r["epochs"] * r["steps_per_epoch"] * r["s_per_step"] > 0
    # D-jit's evaluation adds Table 5's 150-crop multi-crop: dearer than A's dense passes
    assert runs["D-jit"]["eval_s"] > runs["A-256"]["eval_s"] > 0  # 156 forwards per image against 12
    assert est["total_h"] == pytest.approx((est["train_s"] + est["eval_s"]) / 3600)
    assert not (tmp_path / "A-256").exists()
    assert main([*args, "--out-dir", str(tmp_path), "--only", "F-256"]) == 2
    assert "no such runs in the plan: F-256" in capsys.readouterr().err


def test_study_only_with_no_names_is_an_error_not_the_whole_study(tmp_path, capsys, monkeypatch):
    # `--only "$RUNS"` with an empty variable: one line, nothing trained (it used to run every run)
    import verydeep.study.runner as runner

    called = []
    monkeypatch.setattr(runner, "run_study", lambda *a, **k: called.append(k) or {})
    config = str(ROOT / "experiments" / "study.toml")
    for empty in ("", " , "):
        assert main(["study", "--config", config, "--out-dir", str(tmp_path), "--only", empty]) == 2
        assert "--only: no run names given" in capsys.readouterr().err
    assert called == []


def test_estimate_table_says_whether_the_budget_holds():
    from verydeep.study.estimate import estimate_table

    row = {
        "name": "A-256",
        "s_per_step": 0.1,
        "steps_per_epoch": 421,
        "epochs": 14,
        "train_s": 600,
        "eval_s": 30,
    }
    est = {"runs": [row], "train_s": 3 * 3600, "eval_s": 1800, "total_h": 3.5, "budget_h": 4.0, "threads": 2}
    assert "| A-256 | 0.100 | 421 | 14 | 10.0 | 0.5 |" in estimate_table(est)
    assert estimate_table(est).endswith("= 3.50 h on 2 threads; the budget is 4 h: fits.")
    assert estimate_table(est | {"total_h": 6.5}).endswith("the budget is 4 h: exceeds it by 2.50 h.")


@pytest.mark.slow
def test_quick_imagewoof_study_resumes_from_committed_summaries(shared_data, tmp_path, monkeypatch):
    """The photo study end to end on a slice: summaries outside the run directories, a report
    from the summaries alone, and a lost parent checkpoint retrained before its child."""
    monkeypatch.chdir(ROOT)  # the config names ../shared/data relative to the repository
    runs, res, report = tmp_path / "runs", tmp_path / "results", tmp_path / "IMAGEWOOF.md"
    args = ["study", "--quick", "--no-progress", "--config", "experiments/imagewoof.toml"]
    args += ["--out-dir", str(runs), "--results-dir", str(res), "--report", str(report)]
    assert main(args) == 0
    text = report.read_text()
    assert text.startswith("# Results: the paper's study (Tables 3-6) on Imagewoof")
    assert "Imagewoof val split, 40 images" in text and "target 60%" in text and "target 63%" in text
    assert "centre crop, single scale, no flip (val accuracy)" in text and "(reference recipe)" in text
    assert all(f"| {c}-jit | multicrop |" in text for c in ("C", "D", "E"))  # Table 5: every jittered net
    doc = json.loads((tmp_path / "IMAGEWOOF.json").read_text())
    assert doc["targets"]["single"]["target"] == 0.6 and doc["targets"]["ensemble"]["target"] == 0.63
    assert doc["targets"]["single"]["net"] != "D-bn-128-tv"  # a reference recipe is never chosen
    assert doc["targets"]["schedule_ends"]["met"] is False  # one epoch: the cap, not the rule, stopped them
    assert {p["nets"][0] for p in doc["noise"]["pairs"]} == {"A-256", "D-256"}
    assert 0 <= doc["runs"]["D-256"]["single/centre"]["top1_err"] <= 1
    for f in ("config.json", "log.csv", "result.json", "study.json", "eval.json", "posteriors.safetensors"):
        assert (res / "E-jit" / f).is_file()
    assert {p.name for p in res.rglob("*.safetensors")} == {"posteriors.safetensors"}  # no weights
    assert (tmp_path / "IMAGEWOOF_scoremaps.png").stat().st_size > 10_000
    # a fresh clone: no run directories, only the summaries; the report comes back the same
    shutil.move(runs, tmp_path / "gone")
    assert main([*args, "--report-only"]) == 0
    assert report.read_text() == text and not runs.exists()
    # C-256's summary is lost and A-256's weights with it: A-256 is retrained first (its summary
    # kept), then C-256 trained and evaluated; nothing else
    shutil.rmtree(res / "C-256")
    before = (res / "A-256" / "study.json").read_text()
    assert main(args) == 0
    assert sorted(p.name for p in runs.iterdir()) == ["A-256", "C-256"]
    assert (res / "A-256" / "study.json").read_text() == before and (res / "C-256" / "eval.json").is_file()
    # the retrain's own log sits beside the first training's summary, and the report names it
    (again,) = (res / "A-256" / "retrains").iterdir()
    assert (again / "log.csv").is_file() and not (again / "eval.json").exists()
    assert "- A-256: best held-out error" in report.read_text() and f"({again.name})" in report.read_text()
    retrains = json.loads((tmp_path / "IMAGEWOOF.json").read_text())["runs"]["A-256"]["retrains_val_err"]
    assert list(retrains) == [again.name] and 0 <= retrains[again.name] <= 1


def test_timing_table_counts_every_part_of_a_resumed_run(tmp_path):
    """study.json times only the process that finished a run; log.csv's epochs hold every
    part's seconds (A-LRN-256 on Imagewoof: 86 s recorded, about an hour trained)."""
    from verydeep.study.plan import Run
    from verydeep.study.runner import epoch_seconds
    from verydeep.study.tables import timing_table

    log = tmp_path / "log.csv"
    log.write_text("epoch,lr,seconds\n1,0.01,1000.5\n2,0.01,999.5\n3,0.001,\n")
    assert epoch_seconds(log) == (2000.0, None) and epoch_seconds(tmp_path / "none.csv") == (0.0, None)
    (tmp_path / "new.csv").write_text("epoch,seconds,cpu_s\n1,10,15.5\n2,10,14.5\n")
    assert epoch_seconds(tmp_path / "new.csv") == (20.0, 30.0)

    def result(name: str, cpu: float, wall: float, logged: float, ev: dict) -> dict:
        arch = name.rsplit("-", 1)[0]
        rec = {"cpu_s": cpu, "wall_s": wall}
        return {"run": Run(name, arch, [256], []), "record": rec, "eval": ev, "epoch_seconds": logged} | (
            {"epoch_cpu": 1500.0} if name == "B-256" else {}
        )

    runs = {
        "A-256": result("A-256", 900.0, 1000.0, 990.0, {"wall_s": 10.0}),
        "A-LRN-256": result("A-LRN-256", 79.0, 86.0, 2000.0, {}),
        "B-256": result("B-256", 20.0, 30.0, 1000.0, {}),  # resumed, but its epochs logged their CPU
    }
    text = "\n".join(timing_table(runs))
    assert "| A-256 | scratch | 1000 | 900 | 10 |" in text  # never resumed: its own record
    assert "| A-LRN-256 | scratch | 2000 | 79 (last part) | — |" in text
    assert "| B-256 | scratch | 1000 | 1500 | — |" in text  # resumed, yet complete: its epochs logged CPU
    assert "| total | | 4000 (1.1 h) | 2479 (recorded part) | 10 |" in text
    assert "resumed after an interruption" in text


def test_score_maps_keep_the_best_nets_figure_when_its_weights_are_gone(tmp_path, monkeypatch):
    """A new machine has the summaries but not C-256's weights, and a retrained A-256: the
    figure drawn from C-256 stays, rather than being replaced by a weaker net's."""
    import verydeep.study.figures as figures
    from verydeep.cli.study import _score_maps
    from verydeep.study.plan import Run
    from verydeep.study.runner import best_checkpoint

    spec = StudySpec(out_dir=str(tmp_path / "runs"), test_data=str(tmp_path))
    results = {
        n: {"run": Run(n, n[0], [256], []), "val_err": e, "eval": {"multi/dense": {}}}
        for n, e in (("A-256", 0.38), ("C-256", 0.36))
    }
    weights = Path(best_checkpoint(spec, "A-256"))  # only A-256's weights are at hand
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    drawn: list[str] = []
    monkeypatch.setattr(
        figures, "score_maps_png", lambda ck, samples, name, readable: drawn.append(name) or b"png"
    )
    monkeypatch.setattr("verydeep.evaluation.open_data", lambda root: type("D", (), {"samples": [1]})())
    fig = tmp_path / "maps.png"
    fig.write_bytes(b"C-256's figure")
    assert _score_maps(spec, results, fig) == fig and fig.read_bytes() == b"C-256's figure" and not drawn
    fig.unlink()  # no earlier figure: the best net with weights is drawn
    assert _score_maps(spec, results, fig) == fig and drawn == ["A-256"] and fig.read_bytes() == b"png"


def test_a_parent_killed_mid_way_is_not_taken_for_a_trained_one(tmp_path):
    """A run directory with a best checkpoint of its early epochs but no timing record (the run
    was killed) is not a parent to start from: B-256 once started from a 3-epoch A-256 so."""
    from verydeep.study.plan import StudySpec
    from verydeep.study.runner import best_checkpoint, trained

    spec = StudySpec(base=["model.crop_size=32"], out_dir=str(tmp_path))
    best = Path(best_checkpoint(spec, "A-256"))
    best.parent.mkdir(parents=True)
    best.write_bytes(b"weights of epoch 3")
    assert not trained(spec, "A-256")
    (tmp_path / "A-256" / "study.json").write_text('{"cpu_s": 1.0, "wall_s": 1.0}')
    assert trained(spec, "A-256")
    best.unlink()
    assert not trained(spec, "A-256")


def test_same_net_findings_use_the_paired_standard_error():
    import torch
    from scipy.stats import ttest_rel

    from verydeep.study.plan import Run
    from verydeep.study.report import finding_rows, paired_se

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (400,), generator=g)
    wrong_single = torch.rand(400, generator=g) < 0.30
    wrong_multi = wrong_single & (torch.rand(400, generator=g) < 0.85)  # multi-scale fixes some

    def probs(wrong):  # argmax is the label where right, the next class where wrong
        return torch.eye(10)[(labels + wrong.long()) % 10]

    ev = {
        k: {"top1_err": float(w.float().mean()), "probs": probs(w)}
        for k, w in (("single/dense", wrong_single), ("multi/dense", wrong_multi))
    }
    res = {"D-256": {"run": Run("D-256", "D", [256], []), "eval": {**ev, "labels": labels}, "val_err": 0.3}}
    se = paired_se(res, ("D-256", "single/dense"), ("D-256", "multi/dense"))
    diff = ev["single/dense"]["top1_err"] - ev["multi/dense"]["top1_err"]
    t = ttest_rel(wrong_single.float().numpy(), wrong_multi.float().numpy()).statistic
    assert se == pytest.approx(diff / t, rel=1e-5)  # scipy's paired t: mean difference / its s.e.
    row = next(r for r in finding_rows(res, noise=0.05) if r["claim"] == "multi-scale testing helps (D-256)")
    # 0.05 (a seed noise level) would call this difference noise; the paired s.e. does not
    assert row["noise_kind"] == "paired s.e." and row["noise"] == se and diff < 2 * 0.05
    assert row["verdict"] == ("holds" if diff > 2 * se else "noise") and diff > 2 * se
    depth = next(r for r in finding_rows(res, noise=0.05) if r["claim"] == "error falls with depth (A -> D)")
    assert depth["verdict"] == "not run" and depth["noise_kind"] == "noise level"


def test_the_curves_figure_has_a_panel_per_run_and_one_rate_range():
    """Issue 18, item 13: small multiples. A rate drawn at one height means one rate in every
    panel, so a fine-tuning run at 1e-3 sits below a scratch run at 1e-2 (each panel used to
    scale its own axis, and both looked alike); a cosine run's final rate 0 is left out."""
    import matplotlib.pyplot as plt

    from verydeep.io.plots import study_curves_figure

    def rows(lrs):
        return [{"epoch": e + 1, "lr": lr, "train_err": 0.2, "val_err": 0.1} for e, lr in enumerate(lrs)]

    fig = study_curves_figure(
        {"A-256": rows([0.01, 0.01, 0.001]), "A-384": rows([0.001] * 3), "bn": rows([0.05, 0.02, 0.0])},
        columns=2,
    )
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["A-256", "A-384", "bn"]
    twins = [ax for ax in fig.axes if not ax.get_title() and ax.get_yscale() == "log"]
    assert len(twins) == 3 and len({ax.get_ylim() for ax in twins}) == 1
    lo, hi = twins[0].get_ylim()
    plt.close(fig)
    assert lo < 0.001 and hi > 0.05
    assert study_curves_figure({"empty": []}) is None


def test_a_cosine_run_does_not_inherit_the_grids_plateau_keys():
    from verydeep.study.plan import StudySpec, build_plan
    from verydeep.study.runner import run_config

    spec = StudySpec.from_toml("experiments/imagewoof.toml")
    plan = {r.name: r for r in build_plan(spec)}
    assert run_config(spec, plan["A-256"]).optim.patience == 3  # the grid keeps [base.optim]
    cosine = run_config(spec, plan["D-bn-128"]).optim
    assert cosine.schedule == "cosine" and (cosine.patience, cosine.plateau_window) == (1, 1)
