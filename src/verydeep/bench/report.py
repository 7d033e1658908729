"""The bench's result dict as a plain-text table with ratios.

Example:
    >>> from verydeep.bench.report import format_report
    >>> print(format_report({"environment": {"device": "cpu"}, "targets": {}}).splitlines()[0])
    verydeep bench on cpu
"""

from __future__ import annotations


def _rows(
    title: str, variants: dict, base: str, unit: str, extra: str | None = None, paired: dict | None = None
) -> list[str]:
    """One row per variant; the ratio column is the paired per-round ratio where there is one."""
    lines = [title, f"  {'variant':30} {unit:>12} {'x ' + base:>20}" + (f" {extra:>9}" if extra else "")]
    ref = variants[base]["per_s"] if base in variants else None
    paired = {base: 1.0, **(paired or {})}
    for name, v in variants.items():
        if name.startswith("matmul"):  # the hardware-limit probe: only its GFLOP/s means anything
            lines.append(f"  {name:30} {'-':>12} {'-':>20} {v.get('gflops', 0):>9.1f}")
            continue
        ratio = f"{paired[name]:.2f}x" if name in paired else f"{v['per_s'] / ref:.2f}x" if ref else "-"
        row = f"  {name:30} {v['per_s']:>12.2f} {ratio:>20}"
        if extra:
            row += f" {v.get('gflops', 0):>9.1f}"
        lines.append(row)
    return lines


def _model_lines(r: dict) -> list[str]:
    lines = []
    for key, b in r.get("inference", {}).items():
        if not key.startswith("batch_"):
            continue
        title = f"Inference, batch {b['batch']} ({b['gflop_per_image']:.3g} GFLOP/image)"
        lines += _rows(title, b["variants"], "torchvision_fp32", "images/s", "GFLOP/s", b.get("speedups"))
        lines.append(
            f"  best: {b['best']}  {b['speedup']:.2f}x torchvision, "
            f"{100 * b['fraction_of_peak']:.0f}% of the fastest measured matmul of its dtype "
            f"({b.get('limit', 'matmul')})"
        )
    if "compile" in r.get("inference", {}):
        lines.append(f"  torch.compile works here: {r['inference']['compile']['works']}")
    if "training" in r:
        t = r["training"]
        title = f"Training step, batch {t['batch']} ({t['optimizer']})"
        lines += _rows(title, t["variants"], "torchvision_fp32", "images/s", paired=t.get("speedups"))
        lines.append(f"  best: {t['best']}  {t['speedup']:.2f}x torchvision")
    if "perceptual" in r:
        p = r["perceptual"]
        title = f"Perceptual-loss step, VGG-16 to {p['layer']}, batch {p['batch']} at {p['size']} px"
        title += " (input gradient)"
        lines += _rows(title, p["variants"], "torchvision_fp32", "images/s", paired=p.get("speedups"))
        lines.append(f"  best: {p['best']}  {p['speedup']:.2f}x torchvision's create_feature_extractor")
    return lines


def _recheck_line(v: dict, inference: dict) -> str:
    """int8-checked: the share recomputed in fp32, and what that makes of int8's speed at the
    first batch size timed (int8's time plus fp32's for that share of the photos)."""
    shares = ", ".join(f"{m} {100 * f:.1f}%" for m, f in v["rechecked"].items())
    line = f"        near-ties (top-2 margin < {v['check_margin']:g}) recomputed in fp32: {shares}"
    batch = next((b for k, b in inference.items() if k.startswith("batch_")), None)
    if batch and {"verydeep_int8_cl", "verydeep_fp32_cl"} <= set(batch["speedups"]):
        r8, r32 = batch["speedups"]["verydeep_int8_cl"], batch["speedups"]["verydeep_fp32_cl"]
        est = {m: 1 / (1 / r8 + f / r32) for m, f in v["rechecked"].items()}
        line += f"; at batch {batch['batch']} about " + ", ".join(f"{m} {x:.2f}x" for m, x in est.items())
        line += f" torchvision (int8 {r8:.2f}x plus that share at fp32's {r32:.2f}x)"
    return line


def _other_lines(r: dict) -> list[str]:
    """The lines of every part beside the model tables, in a fixed order, for the parts that ran."""
    parts = {
        "comm": _comm_lines,
        "lrn": _lrn_lines,
        "precision": _precision_lines,
        "eval": _eval_lines,
        "data": _data_lines,
        "features": _features_lines,
    }
    return [line for key, lines in parts.items() if key in r for line in lines(r)]


def _comm_lines(r: dict) -> list[str]:
    lines: list[str] = []
    c = r["comm"]
    lines.append(
        f"Gradient all-reduce per optimiser step ({c['parameters'] / 1e6:.1f} M parameters, counted):"
    )
    for k, v in c["choices"].items():
        lines.append(f"  {k:30} {v['bytes_per_step'] / 1e6:>10.2f} MB {v['vs_fp32']:>8.3f}x fp32")
    lines += _predicted_lines(c)
    return lines


def _lrn_lines(r: dict) -> list[str]:
    lines: list[str] = []
    t, shape = r["lrn"]["seconds"], "x".join(map(str, r["lrn"]["input"]))
    lines.append(
        f"A-LRN's LRN, forward + backward on {shape}: torch {t['torch']:.3f} s, verydeep "
        f"{t['verydeep']:.3f} s ({r['lrn']['speedup']:.1f}x)"
    )
    return lines


def _precision_lines(r: dict) -> list[str]:
    lines: list[str] = []
    p = r["precision"]
    lines.append(
        f"Agreement with fp32, {p['checkpoint']} on {p['images']} photos at {p['test_scale_px']} px:"
    )
    for mode, v in p["modes"].items():
        parts = [
            f"{m} {100 * a['top1_agreement']:.1f}% (max |dp| {a['max_prob_diff']:.2g})"
            for m, a in v.items()
            if m in ("centre", "dense")
        ]
        verdict = "" if v["can_be_default"] else "  below 99%: not a default"
        lines.append(f"  {mode:8} top-1 agreement: {', '.join(parts)}{verdict}")
        if "rechecked" in v:
            lines.append(_recheck_line(v, r.get("inference", {})))
        if v.get("top1_err") and p.get("fp32_top1_err"):
            e, ref = v["top1_err"], p["fp32_top1_err"]
            errs = ", ".join(f"{m} {100 * ref[m]:.1f}% -> {100 * e[m]:.1f}%" for m in e)
            lines.append(f"        top-1 error on these photos, fp32 -> {mode}: {errs}")
    return lines


def _eval_lines(r: dict) -> list[str]:
    lines: list[str] = []
    e = r["eval"]
    s, g = e["seconds_per_image"], e["gmacs_per_image"]
    lines.append(f"Evaluation per photo ({e['images']} photos, scales {e['scales_px']} px):")
    for k in s:
        lines.append(f"  {k:30} {s[k]:>9.2f} s {g[k]:>9.1f} GMACs")
    for q, b in e.get("by_scale", {}).items():
        d, c = b["dense_3scale_flip"], b["multicrop_150"]
        rate = lambda x: x["gmacs_per_image"] / x["seconds_per_image"]  # noqa: E731
        lines.append(
            f"    Q = {q} px: dense {d['seconds_per_image']:.2f} s ({rate(d):.0f} GMAC/s), 50 crops "
            f"{c['seconds_per_image']:.2f} s ({rate(c):.0f} GMAC/s): {b['ratio']:.1f}x"
        )
    lines.append(f"  150 crops cost {e['ratio']:.1f}x dense 3-scale+flip ({e['note']})")
    return lines


def _data_lines(r: dict) -> list[str]:
    lines: list[str] = []
    d = r["data"]
    lines.append(f"Data pipeline, {d['images']} JPEGs, S in {d['scale_px']}, crop {d['crop']}, one thread:")
    base, paired = d["images_per_cpu_s"]["torchvision"], d.get("speedups", {})
    for k, v in d["images_per_cpu_s"].items():
        lines.append(f"  {k:30} {v:>9.1f} images/CPU-s {paired.get(k, v / base):>6.2f}x torchvision")
    lines.append(f"  fastest decoder here: {d['best_decoder']}")
    return lines


def _features_lines(r: dict) -> list[str]:
    lines: list[str] = []
    f = r["features"]
    mode = f" in {f['precision']}" if "precision" in f else ""
    lines.append(f"Feature extraction{mode}, {f['images']} photos of mixed sizes ({f['note']}):")
    for k, v in f["images_per_s"].items():
        lines.append(f"  {k:30} {v:>9.2f} images/s {f['gmac_per_s'][k]:>8.1f} GMAC/s")
    lines.append(
        f"  {f['gmacs_per_image']:.2f} GMACs per photo; window buckets {f['speedup']:.2f}x exact sizes"
    )
    return lines


def _predicted_lines(c: dict) -> list[str]:
    """The predicted images/s of 1-64 GPUs per choice and link (assumptions: comm_bench.py)."""
    rows = c.get("predicted", [])
    gpus = sorted({r["gpus"] for r in rows})
    if not rows:
        return []
    head = f"  predicted images/s at {rows[0]['compute_ms']:.1f} ms of compute per step (assumed rate)"
    lines = [head + ", all-reduce overlapped:", "  link      choice      " + "".join(f"{n:>9}" for n in gpus)]
    for link in sorted({r["link_gbps"] for r in rows}):
        for choice in dict.fromkeys(r["grad_comm"] for r in rows):
            mine = [r for r in rows if r["link_gbps"] == link and r["grad_comm"] == choice]
            got = {r["gpus"]: r["images_per_s"] for r in mine}
            lines.append(f"  {link:>3} Gb/s  {choice:11} " + "".join(f"{got[n]:>9.0f}" for n in gpus))
    return lines


def format_report(r: dict) -> str:
    """The whole result as text: ratios are medians of per-round ratios (see ``paired_ratio``)."""
    env = r["environment"]
    head = f"verydeep bench on {env['device']}"
    if env.get("threads"):
        head += f" ({env.get('gpu') or env.get('machine')}, {env['threads']} threads, {env['cpu_capability']}"
        head += f", load average {env['load_average']:.1f} at start)"
    lines = [head, "", *_model_lines(r), *_other_lines(r)]
    if r["targets"]:
        lines += ["", "Targets"]
        for k, t in r["targets"].items():
            lines.append(
                f"  {k:22} {t['measured']:>7.2f} (target {t['target']})  {'met' if t['met'] else 'MISSED'}"
            )
    if r.get("wall_s"):
        took = ", ".join(f"{k} {v:.0f} s" for k, v in r["wall_s"].items())
        lines += ["", f"Wall time: {took}; total {sum(r['wall_s'].values()) / 60:.1f} min"]
    for part, why in r.get("skipped", {}).items():
        lines.append(f"skipped {part}: {why}")
    for part, why in r.get("failed", {}).items():
        lines.append(f"FAILED {part}: {why}")
    for part, prof in _profiles(r):
        lines += ["", f"Profile of {part} (target missed):", prof]
    return "\n".join(lines)


def _profiles(r: dict) -> list[tuple[str, str]]:
    out = []
    for key, b in r.get("inference", {}).items():
        if isinstance(b, dict) and "profile" in b:
            out.append((f"inference {key}", b["profile"]))
    for part in ("training", "data"):
        if "profile" in r.get(part, {}):
            out.append((part, r[part]["profile"]))
    return out
