"""verydeep bench: runs end to end in quick mode with the promised JSON; never checks timings."""

import json
import time

import pytest
import torch

from verydeep.bench.config import PARTS, TARGETS, BenchConfig
from verydeep.bench.nets import build_pair, fast_inference, train_step
from verydeep.bench.timing import interleaved, matmul_variant
from verydeep.cli import main

TINY = {"width_mult": 0.125, "fc_width": 32, "crop_size": 32, "num_classes": 7}


def test_interleaved_alternates_order_and_counts_rounds():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then forward/backward/forward
    assert all(len(v) == 3 and min(v) >= 0 for v in times.values())
    clock = iter(range(100)).__next__  # a fake clock: every call takes exactly one tick
    assert interleaved({"x": lambda: None}, rounds=2, warmup=0, clock=clock) == {"x": [1, 1]}


def test_matmul_probe_flops():
    fn, flops = matmul_variant(8, torch.float32, "cpu", repeat=3)
    fn()
    assert flops == 2 * 8**3 * 3


def test_fast_modes_compute_the_same_function():
    tv, vd = build_pair("A", **TINY)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = tv.eval()(x)
    f32 = fast_inference(vd, torch.device("cpu"), torch.float32)(x)
    assert torch.allclose(f32, ref, atol=1e-4, rtol=1e-4)  # channels_last changes nothing
    bf = fast_inference(vd, torch.device("cpu"), torch.bfloat16)(x).float()
    assert (bf - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3  # bf16: ~3 significant digits
    big = torch.randn(1, 3, 64, 48)
    dense = fast_inference(vd, torch.device("cpu"), torch.float32, dense=True)(big)
    with torch.no_grad():
        assert torch.allclose(dense, vd.eval().dense_forward(big), atol=1e-4, rtol=1e-4)


def test_train_step_is_verydeep_trains_step():
    """Oracle: torch's reference (for-loop) SGD on a plain fp32 NCHW copy with verydeep train's
    parameter groups (weights decayed, biases not); one step each."""
    import copy

    _, vd = build_pair("A", **TINY, dropout=0.0)
    batch = (torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    step = train_step(vd, torch.device("cpu"), batch, channels_last=True, engine=True)
    step()
    ref = copy.deepcopy(vd).train()
    groups = [
        {"params": [p for p in ref.parameters() if p.ndim > 1], "weight_decay": 5e-4},
        {"params": [p for p in ref.parameters() if p.ndim == 1], "weight_decay": 0.0},
    ]
    opt = torch.optim.SGD(groups, lr=1e-4, momentum=0.9, foreach=False)
    torch.nn.functional.cross_entropy(ref(batch[0]), batch[1]).backward()
    opt.step()
    for (name, a), b in zip(step.net.named_parameters(), ref.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    # at lr 1e-4 one step cannot show a bias's decay (5e-8 of it), so check the groups themselves
    decayed = {id(p) for g in step.opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert {id(p) for p in step.net.parameters() if p.ndim > 1} == decayed
    assert all(g.get("fused") for g in step.opt.param_groups)
    bf = train_step(vd, torch.device("cpu"), batch, torch.bfloat16, channels_last=True, engine=True)
    assert torch.isfinite(bf()) and not torch.equal(bf.net.classifier[6].weight, vd.classifier[6].weight)


def _check_structure(r: dict, parts: list[str]) -> None:
    assert set(r) == {"environment", "targets", "wall_s", *parts}
    assert list(r["wall_s"]) == [p for p in PARTS if p in parts] and min(r["wall_s"].values()) > 0
    for name in r["targets"]:
        assert name in TARGETS and set(r["targets"][name]) == {"target", "measured", "met"}
    if "inference" in r:
        b = r["inference"]["batch_4"]
        want = {"torchvision_fp32", "verydeep_fp32_cl", "matmul_fp32"}
        bf16 = {"verydeep_bf16_cl", "matmul_bf16"}  # timed only where bf16 is native (issue 19)
        assert want <= set(b["variants"])
        assert (bf16 <= set(b["variants"])) == r["environment"]["native_bf16"]
        if r["environment"]["device"] == "cpu":  # int8's limit: the kernels the int8 net runs
            assert "verydeep_winograd_cl" in b["variants"]  # --precision winograd, a CPU mode
            assert {"matmul_int8_fbgemm", "matmul_int8_onednn"} <= set(b["variants"])
            assert ("matmul_int8" in b["variants"]) == (r["environment"]["int8_dot"] != "avx2")
        assert r["environment"]["hardware_class"] in ("amx", "avx512_bf16", "avx512", "avx2", "other", "cuda")
        assert b["speedup"] > 0 and b["fraction_of_peak"] > 0 and b["best"].startswith("verydeep")
    if "training" in r:
        assert r["training"]["speedup"] > 0 and r["training"]["batch"] == 4
    if "precision" in r:
        p = r["precision"]
        assert p["images"] == 6 and "int8" in p["modes"]  # a CPU run: int8 is always compared
        assert ("bf16" in p["modes"]) == r["environment"]["native_bf16"]
        for v in p["modes"].values():
            for m in ("centre", "dense"):
                assert 0 <= v[m]["top1_agreement"] <= 1 and v[m]["max_prob_diff"] >= 0
        shares = p["modes"]["int8-checked"]["rechecked"]  # the near-ties it recomputed in fp32
        assert set(shares) == {"centre", "dense"} and all(0 <= f <= 1 for f in shares.values())
    if "eval" in r:
        e = r["eval"]
        assert set(e["seconds_per_image"]) == {"dense_3scale_flip", "multicrop_150"}
        # one row per test scale, whose work adds up to the 3-scale total
        assert list(e["by_scale"]) == [str(q) for q in e["scales_px"]]
        for k, total in e["gmacs_per_image"].items():
            assert sum(b[k]["gmacs_per_image"] for b in e["by_scale"].values()) == pytest.approx(total)
        assert all(b["ratio"] > 0 for b in e["by_scale"].values())
    if "data" in r:
        d = r["data"]
        assert {"torchvision", "verydeep", "verydeep_pil", "decode_simplejpeg"} <= set(d["images_per_cpu_s"])
        assert d["best_decoder"] in ("pil", "pil_draft", "torchvision_io", "simplejpeg")
        assert d["speedup"] == d["speedups"]["verydeep"]  # the pipeline training runs


def test_bench_cli_quick_json_model_parts(capsys):
    t0 = time.process_time()
    assert main(["bench", "--quick", "--json", "--rounds", "1", "--only", "inference", "training"]) == 0
    r = json.loads(capsys.readouterr().out)
    _check_structure(r, ["inference", "training"])
    assert time.process_time() - t0 < 120  # a guard against quick mode growing, not a timing test


def test_bench_lrn_part_times_both_layers_on_a_lrn_input(capsys):
    assert main(["bench", "--quick", "--json", "--rounds", "2", "--only", "lrn"]) == 0
    r = json.loads(capsys.readouterr().out)["lrn"]
    # --quick: batch 4, conv1's 64 channels at width 1/16, crop 32
    assert r["input"] == [4, 4, 32, 32] and r["speedup"] > 0
    assert set(r["seconds"]) == {"torch", "verydeep"} and min(r["seconds"].values()) > 0


def test_perceptual_steps_compute_torchvisions_input_gradient():
    """The bench compares like with like: every variant's step gives torchvision's gradient."""
    from verydeep.bench.loss_bench import perceptual_steps

    half = {"width_mult": 0.5, "fc_width": 16, "crop_size": 32, "num_classes": 3}  # Winograd applies
    cfg = BenchConfig.make(quick=True, model_kwargs=half, all_modes=True)
    fns, batch, size = perceptual_steps(cfg, torch.device("cpu"))
    assert {"torchvision_fp32", "verydeep_fp32", "verydeep_winograd", "verydeep_bf16_autocast"} == set(fns)
    want = fns.pop("torchvision_fp32")()
    assert want.shape == (batch, 3, size, size) and want.abs().max() > 0
    for name, step in fns.items():
        got = step()
        if "bf16" in name:  # 8-bit mantissas through ten layers: the same direction, not digits
            assert float(torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), 0)) > 0.95
        else:
            assert float((got - want).norm() / want.norm()) < 1e-4, name


def test_bench_cli_quick_json_perceptual(capsys):
    assert main(["bench", "--quick", "--rounds", "1", "--only", "perceptual"]) == 0
    out = capsys.readouterr().out
    assert "Perceptual-loss step, VGG-16 to relu4_3, batch 2 at 64 px" in out and "perceptual" in out


def test_bench_cli_quick_json_photo_parts(capsys, shared_data, tmp_path):
    from verydeep.io.checkpoint import Meta, save_model
    from verydeep.models.vgg import VGG

    ckpt = tmp_path / "net.safetensors"  # the precision part needs a net (untrained: structure only)
    net = VGG("A", num_classes=2, width_mult=1 / 16, fc_width=64, crop_size=32)
    save_model(ckpt, net, Meta(classes=["ants", "bees"]))
    args = ["bench", "--quick", "--json", "--rounds", "1", "--data", str(shared_data / "hymenoptera" / "val")]
    args += ["--checkpoint", str(ckpt)]
    # more photos asked for than the folder holds beside the 32 that calibrate int8: fewer are tested
    assert main([*args, "--only", "precision", "--precision-photos", "100000"]) == 0
    p = json.loads(capsys.readouterr().out)["precision"]
    assert p["images"] == 153 - 32 and p["calibration_images"] == 32
    assert p["calibrated_on"] == "other photos of the folder"
    assert main([*args, "--only", "precision", "eval", "data", "features"]) == 0
    r = json.loads(capsys.readouterr().out)
    _check_structure(r, ["precision", "eval", "data", "features"])
    f = r["features"]
    # both ways in this CPU's fast mode (what --precision auto runs): bf16 where native, else Winograd
    want = {"exact_sizes", "window_buckets"}
    fast = "bf16" if r["environment"]["native_bf16"] else "winograd"
    assert r["eval"]["precision"] == fast and f["precision"] == fast
    assert set(r["precision"]["modes"]) >= {"winograd", "int8", "int8-checked"}
    assert r["precision"]["modes"]["winograd"]["can_be_default"]  # rounding only: it agrees
    assert set(f["images_per_s"]) == want and f["speedup"] > 0 and f["gmacs_per_image"] > 0


def test_int8_checked_speed_is_int8_plus_the_rechecked_share_at_fp32():
    from verydeep.bench.report import _recheck_line

    v = {"rechecked": {"centre": 0.5, "dense": 0.0}, "check_margin": 0.05}
    inference = {"batch_8": {"batch": 8, "speedups": {"verydeep_int8_cl": 2.0, "verydeep_fp32_cl": 1.0}}}
    line = _recheck_line(v, inference)  # half the photos at 1x on top of int8's 2x: 1 / (1/2 + 1/2)
    assert "centre 50.0%" in line and "centre 1.00x" in line and "dense 2.00x" in line
    assert "about" not in _recheck_line(v, {})  # no inference part in the run: no estimate


def test_bench_table_and_errors(capsys, tmp_path):
    assert (
        main(["bench", "--quick", "--rounds", "1", "--only", "inference", "--save", str(tmp_path / "r.json")])
        == 0
    )
    out = capsys.readouterr().out
    assert "torchvision_fp32" in out and "Targets" in out
    assert "inference" in json.loads((tmp_path / "r.json").read_text())
    assert main(["bench", "--quick", "--only", "data", "--data", str(tmp_path / "nope")]) == 2
    assert "need real photographs" in capsys.readouterr().err
    assert (
        main(["bench", "--quick", "--rounds", "1", "--only", "lrn", "data"]) == 0
    )  # no --data: data skipped
    assert "skipped data: no --data folder" in capsys.readouterr().out


def test_quick_config_is_small():
    cfg = BenchConfig.make(quick=True)
    assert cfg.quick and not cfg.compile and cfg.crop == 32
    with pytest.raises(ValueError, match="unknown bench parts"):
        from verydeep.bench import run_bench

        run_bench(cfg, parts=("nope",))


def test_emulated_bf16_is_not_timed_unless_asked(monkeypatch):
    """Issue 19, item 1: on an AVX2-only CPU the bench stalled on emulated bf16."""
    from verydeep.bench import model_bench

    monkeypatch.setattr(model_bench, "native_bf16", lambda device: False)
    cfg = BenchConfig.make(quick=True, rounds=1, batches=(2,))
    r = model_bench.bench_inference(cfg, torch.device("cpu"))
    assert not any("bf16" in k for k in r["batch_2"]["variants"])
    cfg.all_modes = True
    r = model_bench.bench_inference(cfg, torch.device("cpu"))
    assert {"verydeep_bf16_cl", "matmul_bf16"} <= set(r["batch_2"]["variants"])


@pytest.mark.parametrize("native", [False, True])
def test_training_part_times_the_layouts_verydeep_train_picks(monkeypatch, native):
    """AVX2-only CPUs: Winograd (what `verydeep train` runs there); direct convs in NCHW and in
    channels_last (which train.channels_last=auto skips there) only with --all-modes. With native
    bf16: channels_last."""
    from verydeep import hardware
    from verydeep.bench import model_bench

    monkeypatch.setattr(model_bench, "native_bf16", lambda device: native)
    monkeypatch.setattr(hardware, "native_bf16", lambda device: native)
    cfg = BenchConfig.make(quick=True, rounds=1, batches=(2,))
    got = set(model_bench.bench_training(cfg, torch.device("cpu"))["variants"])
    avx2 = {"torchvision_fp32", "verydeep_fp32_winograd"}
    assert got == ({"torchvision_fp32", "verydeep_fp32_cl", "verydeep_bf16_cl"} if native else avx2)
    if not native:
        cfg.all_modes = True
        got = set(model_bench.bench_training(cfg, torch.device("cpu"))["variants"])
        assert got == avx2 | {"verydeep_fp32_nchw", "verydeep_fp32_cl", "verydeep_bf16_cl"}


def test_bench_isa_avx2_restarts_itself_held_at_avx2():
    """The bench re-executes itself with the AVX2 variables set (torch's kernels read them at load)."""
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "verydeep",
        "bench",
        "--quick",
        "--rounds",
        "1",
        "--only",
        "lrn",
        "--isa",
        "avx2",
    ]
    out = subprocess.run([*cmd, "--json"], capture_output=True, text=True, check=True).stdout
    env = json.loads(out)["environment"]
    assert env["isa_capped_at_avx2"] and env["cpu_capability"] == "AVX2" and not env["native_bf16"]


def test_a_failing_part_keeps_the_parts_already_measured(monkeypatch, capsys, tmp_path):
    """One part that raises (out of memory, an odd folder) is one line; the others are kept."""
    from verydeep.bench import model_bench

    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(model_bench, "bench_training", boom)
    save = tmp_path / "r.json"
    args = [
        "bench",
        "--quick",
        "--rounds",
        "1",
        "--only",
        "inference",
        "training",
        "lrn",
        "--save",
        str(save),
    ]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "FAILED training: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB" in out
    assert "more detail" not in out and "torchvision_fp32" in out
    r = json.loads(save.read_text())
    assert {"inference", "lrn"} <= set(r) and "training" not in r
    assert set(r["failed"]) == {"training"}


def test_photo_parts_read_any_folder_of_photos(capsys, shared_data):
    """Issue 19, item 6: `--only data --data DIR` on any folder: here a VOC tree, no class folders."""
    voc = shared_data / "critters-voc"
    assert (
        main(
            ["bench", "--quick", "--json", "--rounds", "1", "--only", "data", "features", "--data", str(voc)]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert r["data"]["images"] == 6 and r["data"]["speedup"] > 0 and r["features"]["images"] == 6


def test_sizes_and_targets_are_per_device():
    """A GPU is timed at batches that fill it, against a matmul big enough to reach its peak, and
    checked against its own targets; a size given on the command line is kept on either."""
    from verydeep.bench import check_targets
    from verydeep.bench.config import GPU_TARGETS, NO_BF16_TARGETS, SIZES

    cpu, gpu = BenchConfig.make().sized_for("cpu"), BenchConfig.make().sized_for("cuda")
    assert (cpu.batches, cpu.train_batch, cpu.matmul_n) == ((8, 1), 16, 2048)
    assert (
        (gpu.batches, gpu.train_batch, gpu.matmul_n) == ((64, 1), 64, 8192) == tuple(SIZES["cuda"].values())
    )
    assert BenchConfig.make(train_batch=32).sized_for("cuda").train_batch == 32
    assert BenchConfig.make(quick=True).sized_for("cuda").batches == (4, 1)  # quick stays quick
    measured = {"training": {"speedup": 1.6}, "environment": {"native_bf16": True, "gpu": "H100"}}
    assert check_targets(measured)["training"] == {
        "target": GPU_TARGETS["training"],
        "measured": 1.6,
        "met": False,
    }
    measured["environment"] = {"native_bf16": False}
    assert check_targets(measured)["training"]["target"] == NO_BF16_TARGETS["training"]
