"""The plateau rule: the paper's (single held-out epochs) and its averaged form (``window``)."""

import json

import pytest

from verydeep.config import RunConfig
from verydeep.schedule import PlateauSchedule, make_schedule

# Imagewoof D-256's held-out error over its first 18 epochs at lr 0.01 (903 photographs,
# 2026-12-02): epochs 16-18 fell short of epoch 15 by 0.6-1.7 points (one binomial standard error
# is 1.6) while training error kept falling; the single-epoch rule (patience 3) cut the rate there.
D256_ERR = [0.826, 0.769, 0.741, 0.725, 0.694, 0.700, 0.690, 0.690, 0.665, 0.627, 0.641, 0.621,
            0.649, 0.591, 0.564, 0.580, 0.581, 0.570]  # fmt: skip


def _rates(s: PlateauSchedule, errs: list[float]) -> list[float]:
    out = []
    for e in errs:
        s.step(1 - e)
        out.append(s.lr)
    return out


def test_the_single_epoch_rule_cuts_at_noise_and_the_averaged_rule_does_not():
    single = _rates(PlateauSchedule(0.01, patience=3, window=1), D256_ERR)
    assert single.index(pytest.approx(0.001)) == 17  # after epoch 18, as the run did
    assert _rates(PlateauSchedule(0.01, patience=3, window=3), D256_ERR) == [0.01] * 18


def test_the_averaged_rule_still_finds_a_real_plateau_and_stops():
    s = PlateauSchedule(0.01, patience=2, max_reductions=1, window=3)
    rates = _rates(s, [0.5, 0.4, 0.3] + [0.3] * 4 + [0.2] + [0.2] * 4)
    assert rates[:4] == [0.01] * 4 and 0.001 in rates and s.stopped


def test_the_best_checkpoint_follows_single_epochs_whatever_the_window():
    s = PlateauSchedule(0.01, patience=3, window=3)
    # the third epoch is the best single one though the 3-epoch mean is still rising after it
    assert [s.step(a) for a in (0.30, 0.32, 0.40, 0.35, 0.38, 0.39)] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    assert s.best_epoch_metric == 0.40 and s.best == pytest.approx((0.40 + 0.35 + 0.38) / 3)


def test_a_resumed_schedule_decides_as_an_uninterrupted_one():
    errs = [*D256_ERR, 0.57, 0.58, 0.58, 0.59, 0.60, 0.61]
    whole = _rates(PlateauSchedule(0.01, patience=2, window=3), errs)
    first = PlateauSchedule(0.01, patience=2, window=3)
    head = _rates(first, errs[:10])
    saved = json.loads(json.dumps(first.state_dict()))  # checkpoints keep it as JSON
    again = PlateauSchedule(0.01, patience=2, window=3)
    again.load_state_dict(saved)
    assert head + _rates(again, errs[10:]) == whole and 0.001 in whole


def test_a_schedule_saved_before_the_window_existed_resumes_as_the_paper_rule():
    old = {"lr": 0.01, "factor": 0.1, "patience": 1, "max_reductions": 3, "best": 0.6, "bad_epochs": 0,
           "reductions": 0, "stopped": False}  # fmt: skip
    s = PlateauSchedule(0.01, patience=1, window=5)
    s.load_state_dict(old)
    assert s.window == 1 and s.best_epoch_metric == 0.6
    assert s.step(0.59) is False and s.lr == pytest.approx(0.001)  # not a "new best" over the old 0.6


def test_the_window_is_a_config_field_with_a_range():
    cfg = RunConfig.from_sources(overrides=["optim.plateau_window=3", "optim.patience=3"])
    assert make_schedule(cfg.optim, epochs=10, steps_per_epoch=5).window == 3
    with pytest.raises(ValueError, match=r"optim\.plateau_window must be in"):
        RunConfig.from_sources(overrides=["optim.plateau_window=0"])


# --- the linear scaling rule for large batches (Goyal et al. 2017; issue 45, item 3) ---------


def _step_rates(sched, steps: int) -> list[float]:
    return [sched.at_step(s) for s in range(steps)]


def test_linear_scaling_ramps_from_the_base_rate_to_k_times_it():
    """Batch 1024 at lr 0.01 for batch 256: k = 4. Goyal et al.: start at 0.01, rise linearly to
    0.04 over the warm-up (here 2 epochs of 3 steps), then the plateau rule at 0.04."""
    optim = RunConfig.from_sources(
        overrides=[
            "optim.lr=0.01",
            "optim.batch_size=1024",
            "optim.lr_scaling=linear",
            "optim.scaling_warmup_epochs=2",
            "optim.schedule=plateau",
        ]
    ).optim
    sched = make_schedule(optim, epochs=10, steps_per_epoch=3)
    want = [0.01 + (0.04 - 0.01) * (s + 1) / 6 for s in range(6)] + [0.04] * 3
    assert _step_rates(sched, 9) == pytest.approx(want, rel=1e-12)
    assert sched.lr == pytest.approx(0.04)


def test_linear_scaling_with_cosine_scales_the_peak():
    base = ["optim.lr=0.01", "optim.batch_size=512", "optim.schedule=cosine", "optim.warmup_epochs=1"]
    plain = make_schedule(RunConfig.from_sources(overrides=base).optim, 4, 5)
    scaled = make_schedule(RunConfig.from_sources(overrides=[*base, "optim.lr_scaling=linear"]).optim, 4, 5)
    assert _step_rates(scaled, 20) == pytest.approx([2 * r for r in _step_rates(plain, 20)], rel=1e-12)
    assert max(_step_rates(scaled, 20)) == pytest.approx(0.02)


def test_no_scaling_leaves_the_rate_alone_and_its_keys_are_refused_without_it():
    optim = RunConfig.from_sources(overrides=["optim.lr=0.01", "optim.batch_size=1024"]).optim
    assert _step_rates(make_schedule(optim, 5, 4), 8) == [0.01] * 8  # the paper's rule: no ramp
    for key in ("optim.lr_base_batch=128", "optim.scaling_warmup_epochs=2"):
        with pytest.raises(ValueError, match=r"apply with optim\.lr_scaling=linear only"):
            RunConfig.from_sources(overrides=[key])


def test_a_ramp_resumes_where_it_stopped():
    optim = RunConfig.from_sources(
        overrides=[
            "optim.lr=0.01",
            "optim.batch_size=2048",
            "optim.lr_scaling=linear",
            "optim.schedule=plateau",
        ]
    ).optim
    a = make_schedule(optim, 10, 4)
    b = make_schedule(optim, 10, 4)
    b.load_state_dict(a.state_dict())
    assert _step_rates(a, 30) == _step_rates(b, 30) and a.ramp_steps == 20  # 5 epochs of 4 steps
