"""Training end to end on real Fashion-MNIST: learning, exact resume, DDP == one process."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from verydeep.build import param_groups
from verydeep.config import RunConfig
from verydeep.engine import NonFiniteLossError, StepState, topk_errors, train_one_epoch
from verydeep.models.vgg import VGG
from verydeep.train import fit

TINY = [
    "model.arch=A",
    "model.width_mult=0.125",
    "model.fc_width=32",
    "model.crop_size=32",
    "model.init=glorot",
]


def cfg(out, *extra):
    return RunConfig.from_sources(overrides=[*TINY, f"train.out_dir={out}", *extra])


@pytest.mark.slow
def test_learns_well_below_chance(fmnist_root, tmp_path):
    tiny = ["model.width_mult=0.25", "model.fc_width=128", "data.subset=6000", "optim.batch_size=64"]
    result = fit(cfg(tmp_path, *tiny, "train.epochs=3"), progress=False)
    assert result["test"]["top1_err"] < 0.5  # chance is 0.90
    assert (tmp_path / "curves.png").stat().st_size > 1000
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert len(log) == 4 and log[0].startswith("epoch,lr,train_loss")
    assert (tmp_path / "checkpoints" / "best.safetensors").is_file()


def test_resume_is_bit_identical(fmnist_root, tmp_path):
    common = ["data.subset=400", "optim.batch_size=32", "train.precision=fp32", "train.eval_test=false"]
    fit(cfg(tmp_path / "straight", *common, "train.max_steps=7"), progress=False)
    fit(cfg(tmp_path / "split", *common, "train.max_steps=4", "train.checkpoint_every=1"), progress=False)
    fit(cfg(tmp_path / "split", *common, "train.max_steps=7"), progress=False)  # crosses an epoch end
    a = load_file(tmp_path / "straight" / "checkpoints" / "last.safetensors")
    b = load_file(tmp_path / "split" / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ddp_two_processes_equal_one(fmnist_root, tmp_path):
    common = [
        *TINY, "model.dropout=0", "data.subset=300", "data.scale=[224]", "data.flip=false",
        "data.colour_shift=0", "optim.batch_size=16", "train.precision=fp32", "train.max_steps=3",
        "train.eval_test=false", "train.device=cpu", "train.save_init=true",
    ]  # fmt: skip
    sets = [a for o in common for a in ("--set", o)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    one = [
        sys.executable,
        "-m",
        "verydeep",
        "train",
        "--no-progress",
        *sets,
        "--set",
        f"train.out_dir={tmp_path / 'one'}",
    ]
    subprocess.run(one, check=True, env=env, capture_output=True)
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29533",
        "-m",
    ]
    two = [*launch, "verydeep", "train", "--no-progress", *sets, "--set", f"train.out_dir={tmp_path / 'two'}"]
    subprocess.run(two, check=True, env=env, capture_output=True)
    a = load_file(tmp_path / "one" / "checkpoints" / "last.safetensors")
    b = load_file(tmp_path / "two" / "checkpoints" / "last.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    init = load_file(tmp_path / "one" / "checkpoints" / "init.safetensors")  # the same run's step 0
    assert not torch.equal(a["classifier.6.weight"], init["classifier.6.weight"])  # training moved it
    # the logged training loss and error cover every rank's images, not rank 0's half (issue 17, 18)
    logs = [(tmp_path / r / "log.csv").read_text().splitlines() for r in ("one", "two")]
    rows = [dict(zip(lg[0].split(","), lg[-1].split(","), strict=True)) for lg in logs]
    for key in ("train_loss", "train_err"):
        assert float(rows[0][key]) == pytest.approx(float(rows[1][key]), rel=1e-4), key


@pytest.mark.parametrize("fused", [True, False])
def test_nonfinite_loss_stops_or_skips(fused):
    """A bad step is never applied (weights and momentum as before it); ``stop`` raises at the
    next sync, ``skip`` counts it. Fused SGD skips on the device, others on the host."""
    torch.manual_seed(0)
    net = VGG("A", num_classes=3, in_channels=1, width_mult=0.125, fc_width=16, crop_size=32)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, fused=fused)
    good = (torch.randn(2, 1, 32, 32), torch.tensor([0, 1]))
    poison = (torch.full((2, 1, 32, 32), float("nan")), torch.tensor([0, 1]))
    cpu = torch.device("cpu")
    train_one_epoch(net, [good], opt, prepare=lambda t: t, device=cpu, state=StepState())  # momentum exists
    before = [p.clone() for p in net.parameters()]
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in net.parameters()]
    with pytest.raises(NonFiniteLossError, match="non-finite loss or gradient at step 1"):
        train_one_epoch(net, [poison], opt, prepare=lambda t: t, device=cpu, state=StepState(global_step=1))
    state = StepState()
    train_one_epoch(
        net, [poison, poison], opt, prepare=lambda t: t, device=cpu, state=state, on_nonfinite="skip"
    )
    assert state.skipped_steps == 2 and state.global_step == 2
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    after = [opt.state[p]["momentum_buffer"] for p in net.parameters()]
    assert all(torch.equal(m, n) for m, n in zip(momentum, after, strict=True))


@pytest.mark.parametrize("fused", [True, False])
def test_a_skipped_first_step_leaves_the_next_step_as_a_first_step(fused):
    """Fused SGD makes its momentum buffers with ``empty_like`` on its first step: a first step
    skipped on the device left them uninitialised, and the next step added that memory in.
    The freed NaN tensors below put NaN where those buffers are made, as a long run's heap does."""
    torch.manual_seed(0)

    def make():
        torch.manual_seed(0)
        net = VGG("A", num_classes=3, in_channels=1, width_mult=0.125, fc_width=16, crop_size=32, dropout=0)
        return net, torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, fused=fused)

    good = (torch.randn(2, 1, 32, 32), torch.tensor([0, 1]))
    poison = (torch.full((2, 1, 32, 32), float("nan")), torch.tensor([0, 1]))
    kw = {"prepare": lambda t: t, "device": torch.device("cpu"), "on_nonfinite": "skip"}
    ref, ref_opt = make()
    train_one_epoch(ref, [good], ref_opt, state=StepState(), **kw)
    net, opt = make()
    for _ in range(3):
        junk = [torch.full_like(p, float("nan")) for p in net.parameters()]
        del junk
        state = StepState()
        train_one_epoch(net, [poison], opt, state=state, **kw)
    assert state.skipped_steps == 1
    train_one_epoch(net, [good], opt, state=StepState(), **kw)
    for a, b in zip(ref.parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_resumed_optimiser_state_takes_the_nets_memory_format():
    """An NCHW run resumed channels_last (a CPU run resumed on a GPU): the loaded momentum buffers
    are laid out as their parameters, not as they were saved."""
    from verydeep.engine import match_layout

    torch.manual_seed(0)
    saved = VGG("A", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32)
    opt = torch.optim.SGD(saved.parameters(), lr=0.1, momentum=0.9)
    saved(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    net = VGG("A", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32).to(
        memory_format=torch.channels_last
    )
    resumed = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, fused=True)
    resumed.load_state_dict(opt.state_dict())
    conv = net.features[0].weight
    assert resumed.state[conv]["momentum_buffer"].stride() != conv.stride()  # what torch loads
    match_layout(resumed)
    for p, saved_p in zip(net.parameters(), saved.parameters(), strict=True):
        buf = resumed.state[p]["momentum_buffer"]
        assert buf.stride() == p.stride() and torch.equal(buf, opt.state[saved_p]["momentum_buffer"])


def test_deterministic_mode_trains_the_same_and_gives_the_setting_back(fmnist_root, tmp_path):
    c = [f"data.root={fmnist_root}", "data.subset=200", "optim.batch_size=32", "train.eval_test=false"]
    plain = fit(cfg(tmp_path / "a", *c, "train.max_steps=2"), progress=False)
    strict = fit(cfg(tmp_path / "b", *c, "train.max_steps=2", "train.deterministic=true"), progress=False)
    assert not torch.are_deterministic_algorithms_enabled()  # the caller's setting, restored
    a, b = (load_file(str(tmp_path / d / "checkpoints" / "last.safetensors")) for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a) and plain["global_step"] == strict["global_step"] == 2


def test_a_skipped_step_is_left_out_of_the_epoch_loss():
    """Under ``skip`` the epoch's loss and error are those of the steps that trained; before,
    one skipped step made the logged train loss NaN for the whole epoch."""
    torch.manual_seed(0)
    net = VGG("A", num_classes=3, in_channels=1, width_mult=0.125, fc_width=16, crop_size=32, dropout=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)  # the weights stay put: both passes see one net
    good = (torch.randn(2, 1, 32, 32), torch.tensor([0, 1]))
    poison = (torch.full((2, 1, 32, 32), float("nan")), torch.tensor([0, 1]))
    kw = {"prepare": lambda t: t, "device": torch.device("cpu"), "on_nonfinite": "skip"}
    alone = train_one_epoch(net, [good], opt, state=StepState(), **kw)
    state = StepState()
    mixed = train_one_epoch(net, [good, poison], opt, state=state, **kw)
    assert state.skipped_steps == 1 and state.sums.seen == 2  # two images trained, not four
    assert mixed["loss"] == pytest.approx(alone["loss"]) and mixed["top1_err"] == alone["top1_err"]


def test_gradient_accumulation_equals_full_batch():
    torch.manual_seed(0)
    net = VGG("A", num_classes=3, in_channels=1, width_mult=0.125, fc_width=16, crop_size=32, dropout=0)
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 3, (8,))
    nets = [net, VGG(**net.build_kwargs)]
    nets[1].load_state_dict(net.state_dict())
    for n, chunks in zip(nets, (1, 4), strict=True):
        opt = torch.optim.SGD(n.parameters(), lr=0.1)
        batches = list(zip(x.chunk(chunks), y.chunk(chunks), strict=True))
        cpu = torch.device("cpu")
        train_one_epoch(
            n, batches, opt, prepare=lambda t: t, device=cpu, state=StepState(), accum_steps=chunks
        )
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_weight_decay_applies_to_weights_only():
    net = VGG("A_bn", num_classes=3, width_mult=0.125, fc_width=16, crop_size=32)
    decay, no_decay = param_groups(net, 5e-4, decay_biases=False)
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) == 8 + 3


def test_topk_clipped_to_classes():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    assert topk_errors(logits, torch.tensor([1, 2])) == [1, 0]  # top-5 of 3 classes: all hit


def test_fine_tune_starts_from_every_layer_of_the_source(fmnist_root, tmp_path):
    """Same classes (10 to 10): the weights before step 1 are the source's, FC8 included, and
    the run is in the source's shape without naming it (a fine-tune that loaded nothing would
    start from a random init, and one that ignored the shape would not build)."""
    first = cfg(
        tmp_path / "a", "data.subset=200", "optim.batch_size=32", "train.max_steps=1", "train.eval_test=false"
    )
    fit(first, progress=False)
    ckpt = tmp_path / "a" / "checkpoints" / "last.safetensors"
    tune = ["data.subset=200", "optim.batch_size=32", "train.max_steps=1", f"train.init_from={ckpt}"]
    again = RunConfig.from_sources(
        overrides=[*tune, f"train.out_dir={tmp_path / 'b'}", "data.scale=[384]", "train.eval_test=false",
                   "train.save_init=true"]
    )  # fmt: skip
    fit(again, progress=False)
    a, b = load_file(ckpt), load_file(tmp_path / "b" / "checkpoints" / "init.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_net_a_as_a_train_option(fmnist_root, tmp_path):
    short = ["data.subset=200", "optim.batch_size=32", "train.max_steps=1", "train.eval_test=false"]
    fit(cfg(tmp_path / "a", *short), progress=False)
    a = load_file(tmp_path / "a" / "checkpoints" / "last.safetensors")
    ckpt = tmp_path / "a" / "checkpoints" / "last.safetensors"
    deep = cfg(tmp_path / "d", *short, "model.arch=D", f"model.init_from_a={ckpt}", "optim.lr=1e-9")
    fit(deep, progress=False)
    d = load_file(tmp_path / "d" / "checkpoints" / "last.safetensors")
    # A's conv2_1 is features.3; D's conv2_1 is features.5 (after conv1_2 and the pool)
    torch.testing.assert_close(d["features.5.weight"], a["features.3.weight"], rtol=0, atol=1e-6)
    torch.testing.assert_close(d["classifier.0.weight"], a["classifier.0.weight"], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_image_folder_fine_tune_from_fashion_mnist(fmnist_root, shared_data, tmp_path):
    """Real photographs through the file pipeline, from a 10-class grey net to 2 RGB classes."""
    src = cfg(tmp_path / "fm", "data.subset=200", "data.grey_to_rgb=true", "optim.batch_size=32",
              "train.max_steps=1", "train.eval_test=false")  # fmt: skip
    fit(src, progress=False)
    ckpt = tmp_path / "fm" / "checkpoints" / "last.safetensors"
    tune = cfg(tmp_path / "hy", "data.dataset=imagefolder", f"data.root={shared_data / 'hymenoptera'}",
               "data.scale=[256, 512]", "data.workers=0", "optim.batch_size=32", "optim.lr=1e-3",
               f"train.init_from={ckpt}", "train.epochs=1", "train.save_init=true")  # fmt: skip
    result = fit(tune, progress=False)
    assert result["test"]["images"] == 153  # the whole val split
    assert 0 <= result["test"]["top1_err"] <= 1 and result["test"]["top5_err"] == 0  # 2 classes
    src, init = load_file(ckpt), load_file(tmp_path / "hy" / "checkpoints" / "init.safetensors")
    body = [k for k in src if not k.startswith("classifier.6")]
    assert all(torch.equal(src[k], init[k]) for k in body)  # loaded, not left at the random init
    assert init["classifier.6.weight"].shape[0] == 2 and not init["classifier.6.bias"].any()
    assert init["classifier.6.weight"].std() < 0.02  # the paper's N(0, 0.01), not Glorot's scale


def test_rerun_of_a_finished_run_takes_no_extra_step(fmnist_root, tmp_path):
    c = ["data.subset=200", "optim.batch_size=32", "train.max_steps=2", "train.eval_test=false"]
    fit(cfg(tmp_path, *c), progress=False)
    before = load_file(tmp_path / "checkpoints" / "last.safetensors")
    assert fit(cfg(tmp_path, *c), progress=False)["global_step"] == 2
    after = load_file(tmp_path / "checkpoints" / "last.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_cosine_schedule_changes_the_rate_each_step_and_resumes_exactly(fmnist_root, tmp_path):
    common = ["data.subset=400", "optim.batch_size=32", "train.precision=fp32", "train.eval_test=false"]
    common += ["optim.schedule=cosine", "optim.warmup_epochs=0.5", "optim.lr=0.05", "train.epochs=2"]
    fit(cfg(tmp_path / "straight", *common), progress=False)
    fit(cfg(tmp_path / "split", *common, "train.max_steps=4", "train.checkpoint_every=1"), progress=False)
    fit(cfg(tmp_path / "split", *common), progress=False)  # resumes mid-warm-up
    a = load_file(tmp_path / "straight" / "checkpoints" / "last.safetensors")
    b = load_file(tmp_path / "split" / "checkpoints" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [r.split(",") for r in (tmp_path / "straight" / "log.csv").read_text().splitlines()[1:]]
    lrs = [float(r[1]) for r in rows]  # the rate of each epoch's last step
    assert len(lrs) == 2 and 0 < lrs[0] < 0.05 and lrs[1] == pytest.approx(0.0, abs=1e-9)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match=r"optim\.schedule must be one of auto \| plateau \| cosine"):
        cfg("unused", "optim.schedule=step")


def test_save_init_keeps_the_weights_before_the_first_step(fmnist_root, tmp_path):
    from verydeep import distributed
    from verydeep.build import build_model

    c = ["data.subset=200", "optim.batch_size=32", "train.eval_test=false", "train.save_init=true"]
    fit(cfg(tmp_path, *c, "train.max_steps=1"), progress=False)
    init_file = tmp_path / "checkpoints" / "init.safetensors"
    init, last = load_file(init_file), load_file(tmp_path / "checkpoints" / "last.safetensors")
    assert not torch.equal(init["features.0.weight"], last["features.0.weight"])  # a step was taken
    # the same seed builds the same net: that is the init
    distributed.seed_everything(0, distributed.DistEnv())
    fresh = build_model(cfg(tmp_path, *c), classes=10, channels=1).state_dict()
    assert init.keys() == fresh.keys() and all(torch.equal(init[k], fresh[k]) for k in init)
    before = init_file.read_bytes()
    fit(cfg(tmp_path, *c, "train.max_steps=2"), progress=False)  # resuming leaves it alone
    assert init_file.read_bytes() == before


def test_the_quick_start_config_trains(fmnist_root, tmp_path):
    """The README's first command (`make train`) runs experiments/quickstart.toml: the same file,
    cut to a few steps, builds and trains (a renamed key or a range it breaks fails here)."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.toml"
    short = ["data.subset=600", "train.max_steps=3", "train.eval_test=false", f"train.out_dir={tmp_path}"]
    result = fit(RunConfig.from_sources(path, overrides=short), progress=False)
    assert result["global_step"] == 3 and (tmp_path / "checkpoints" / "last.safetensors").is_file()
    config = (tmp_path / "config.json").read_text()
    assert '"arch": "A"' in config and '"width_mult": 0.25' in config and '"epochs": 12' in config


def test_the_plateau_rule_is_fed_held_out_accuracy_and_its_cuts_reach_sgd(fmnist_root, tmp_path, monkeypatch):
    """Inside training: each epoch's held-out accuracy (1 - val_err of log.csv) goes to the rule,
    and every rate the log shows is the rate SGD stepped with in the next epoch."""
    from verydeep import schedule

    fed, used = [], []
    real_step, real_sgd = schedule.PlateauSchedule.step, torch.optim.SGD.step

    def record_metric(self, metric):
        fed.append(metric)
        return real_step(self, metric)

    def record_lr(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return real_sgd(self, *args, **kwargs)

    monkeypatch.setattr(schedule.PlateauSchedule, "step", record_metric)
    monkeypatch.setattr(torch.optim.SGD, "step", record_lr)
    # lr 1e-6: the held-out accuracy stays put, so the rule cuts after every epoch but the first
    run = cfg(
        tmp_path,
        "data.subset=256",
        "optim.batch_size=64",
        "optim.lr=1e-6",
        "train.epochs=4",
        "data.val_fraction=0.25",
        "optim.patience=1",
        "optim.max_reductions=5",
        "train.eval_test=false",
    )
    fit(run, progress=False)
    rows = [line.split(",") for line in (tmp_path / "log.csv").read_text().splitlines()[1:]]
    assert fed == pytest.approx([1 - float(r[6]) for r in rows])  # val_err is column 6
    steps = len(used) // len(rows)
    per_epoch = [used[i * steps : (i + 1) * steps] for i in range(len(rows))]
    assert set(per_epoch[0]) == {1e-6}
    for row, next_epoch in zip(rows, per_epoch[1:], strict=False):
        assert next_epoch == pytest.approx([float(row[1])] * steps, rel=1e-6)
    assert float(rows[-1][1]) < 1e-8  # the rule did cut


def test_save_epochs_false_writes_one_checkpoint_when_training_ends(fmnist_root, tmp_path, monkeypatch):
    """train.save_epochs=false (gpu_check's big-net runs): no checkpoint per epoch, one at the end,
    and the weights are those of an epoch-saving run (saving never changes training)."""
    import verydeep.io.run_dir as run_dir

    common = ["data.subset=200", "optim.batch_size=32", "train.precision=fp32", "train.eval_test=false",
              "train.epochs=3", "data.workers=0"]  # fmt: skip
    fit(cfg(tmp_path / "every", *common), progress=False)
    saves, real = [], run_dir.RunDir.save
    monkeypatch.setattr(
        run_dir.RunDir, "save", lambda self, *a, **k: (saves.append(a[4].global_step), real(self, *a, **k))
    )
    fit(cfg(tmp_path / "once", *common, "train.save_epochs=false"), progress=False)
    assert saves == [15]  # 5 steps an epoch, 3 epochs: saved once, after the last
    a, b = (load_file(tmp_path / r / "checkpoints" / "last.safetensors") for r in ("once", "every"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "once" / "checkpoints" / "best.safetensors").is_file()


def test_a_criterion_on_structured_targets_trains_as_the_default_loss():
    """``criterion`` gets the net's outputs and the batch's targets as they were yielded (here a
    dict holding a list): cross-entropy written as a criterion gives the default's weights and
    loss bit for bit, and ``errors=None`` counts no top-1 error."""
    import torch.nn.functional as F

    def run(batch, **kw):
        torch.manual_seed(0)
        net = VGG("A", num_classes=3, in_channels=1, width_mult=0.125, fc_width=16, crop_size=32)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, fused=True)
        m = train_one_epoch(net, [batch, batch], opt, prepare=lambda t: t, device=torch.device("cpu"),
                            state=StepState(), **kw)  # fmt: skip
        return net, m

    x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 2, 0])
    plain, m = run((x, y))
    mine, m2 = run((x, {"y": [y]}), criterion=lambda out, t: F.cross_entropy(out, t["y"][0]), errors=None)
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), mine.parameters(), strict=True))
    assert m2["loss"] == m["loss"] and "top1_err" in m and "top1_err" not in m2


def test_targets_of_any_structure_move_to_the_device():
    from collections import namedtuple

    from verydeep.engine import to_device

    Pair = namedtuple("Pair", "a b")
    t = torch.zeros(2)
    moved = to_device({"x": [t, (t, "name")], "p": Pair(t, 3)}, torch.device("meta"))
    assert moved["x"][0].is_meta and moved["x"][1][0].is_meta and moved["x"][1][1] == "name"
    assert isinstance(moved["x"][1], tuple) and isinstance(moved["p"], Pair) and moved["p"].a.is_meta
    assert moved["p"].b == 3
