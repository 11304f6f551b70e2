"""The GPU check's targets (issue 8) and its Markdown summary, from the JSON summary alone."""

from __future__ import annotations

from typing import Any

JSON_NAME, MARKDOWN_NAME = "gpu_check.json", "gpu_check.md"
ESRGAN_IT_S = 20.0  # issue 8: ESRGAN stage >= 20 it/s at batch 16 / HR 128 in bf16 on one H100
PSNR_FACTOR = 3.0  # issue 8: the PSNR stage >= 3x that
LOADER_FACTOR = 3.0  # issue 8, section 1: the loader >= 3x the crops/s the GAN step consumes
LOADER_WORKERS = "8"  # conf/data/div2k.yaml num_workers (the dry run has fewer: its first count)


def best_bf16(steps: list[dict[str, Any]], stage: str) -> dict[str, Any] | None:
    """The fastest bf16 rung (bf16, +channels_last, +compile) of ours for `stage`."""
    rows = [s for s in steps if s.get("stage") == stage and str(s.get("config", "")).startswith("bf16")]
    rows = [s for s in rows if s.get("ours_it_s")]
    return max(rows, key=lambda s: s["ours_it_s"]) if rows else None


def bound_of(profiles: dict[str, Any], stage: str, rung: dict[str, Any] | None) -> str | None:
    """What bounds `rung` (the fastest): its own profile where the check made one, else that of the
    nearest rung it adds a switch to (bf16+cl+graphs+fused: bf16+cl+graphs), else the bf16 one."""
    switches = str(rung["config"]).split("+") if rung else []
    for n in range(len(switches), 1, -1):
        if found := profiles.get(f"{stage} {'+'.join(switches[:n])}"):
            return found.get("bound")
    return profiles.get(stage, {}).get("bound")


def target_row(name: str, target: float, measured: float | None, how: str, bound: str | None) -> dict[str, Any]:
    met = None if measured is None else measured >= target
    missed = None
    if measured is None:
        missed = "not measured"
    elif not met:
        missed = (
            f"{target - measured:,.1f} short ({measured / target:.0%} of the target; {target / measured:.1f}x to go)"
        )
    keys = ("name", "target", "measured", "how", "met", "missed_by", "bound_by")
    return dict(zip(keys, (name, target, measured, how, met, missed, bound)))


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    steps, profiles = summary.get("steps", []), summary.get("profiles", {})
    esrgan, psnr = best_bf16(steps, "esrgan"), best_bf16(steps, "psnr_rrdb")
    rows = [
        target_row(
            f"ESRGAN stage, batch 16, HR 128, bf16: >= {ESRGAN_IT_S:g} it/s",
            ESRGAN_IT_S,
            esrgan and esrgan["ours_it_s"],
            esrgan["config"] if esrgan else "",
            bound_of(profiles, "esrgan", esrgan),
        ),
        target_row(
            f"PSNR stage (RRDBNet + L1), batch 16, HR 128, bf16: >= {PSNR_FACTOR:g} x {ESRGAN_IT_S:g} it/s",
            PSNR_FACTOR * ESRGAN_IT_S,
            psnr and psnr["ours_it_s"],
            psnr["config"] if psnr else "",
            bound_of(profiles, "psnr_rrdb", psnr),
        ),
    ]
    loaders = summary.get("data", {}).get("loader", {})
    workers = LOADER_WORKERS if LOADER_WORKERS in loaders else next(iter(loaders), LOADER_WORKERS)
    loader = loaders.get(workers)
    if esrgan:
        consumed = esrgan["ours_it_s"] * esrgan["batch"]
        per_worker = summary.get("data", {}).get("per_worker", {}).get("prepared, maps kept open")
        bound = f"one worker cuts {per_worker:,.0f} crops/s (prepared)" if per_worker else None
        rows.append(
            target_row(
                f"DataLoader, {workers} workers: >= {LOADER_FACTOR:g} x the crops/s of the ESRGAN step "
                f"({consumed:,.0f})",
                LOADER_FACTOR * consumed,
                loader,
                "prepared data",
                bound,
            )
        )
    if summary.get("dry_run"):
        for row in rows:
            row["note"] = "dry run: tiny networks on a CPU, not a GPU figure"
    return rows


def compilation_note(compiled: dict[str, dict[str, int]] | None) -> str:
    """`` (5 graphs, 2 CUDA-graph skips; plain: 5 graphs)`` for a compiled rung: what ours compiled,
    and the plain loop's counts where they differ (a side that compiled less ran partly eagerly; one
    that recorded more CUDA graphs, or compiled or recorded inside the timed window, paid for it there)."""
    if not compiled:
        return ""

    def counts(side: dict[str, int]) -> str:
        graphs = side.get("graphs", 0)
        parts = [f"{graphs} graph{'' if graphs == 1 else 's'}"]
        labels = (
            ("graph_breaks", "graph breaks"),
            ("cudagraph_skips", "CUDA-graph skips"),
            ("cudagraph_recordings", "CUDA graphs recorded"),
            ("frames_in_window", "frames compiled in the timed window"),
            ("cudagraph_recordings_in_window", "CUDA graphs recorded in the timed window"),
        )
        for key, label in labels:
            if side.get(key):
                parts.append(f"{side[key]} {label}")
        return ", ".join(parts)

    ours, plain = counts(compiled.get("ours", {})), counts(compiled.get("plain", {}))
    return f" ({ours})" if ours == plain else f" ({ours}; plain: {plain})"


def degradation_lines(d: dict[str, Any]) -> list[str]:
    """Ours on the device vs the per-image loader work on one core; ours vs the step it feeds."""
    batch, feed = f"{d['batch']} x {d['hr']} px", f"{d['feed'][0]} x {d['feed'][1]} px"
    rows = [
        [
            f"batch {batch}",
            f"{d['ours_ms']:.1f} ms",
            f"{d['baseline_ms']:.1f} ms (per image, NumPy/SciPy/Pillow, 1 core)",
        ]
    ]
    if d.get("step_ms"):
        rows.append([f"batch {feed}", f"{d['feed_ms']:.1f} ms", f"{d['step_ms']:.1f} ms (the bf16 ESRGAN step, ours)"])
    lines = _table(["degradation of", "ours, one batched call", "against"], rows)
    share = f"; at the step's batch it costs {d['feed_ms'] / d['step_ms']:.1%} of the step" if d.get("step_ms") else ""
    return [*lines, "", f"ratio {d['baseline_ms'] / d['ours_ms']:.1f}x the loader core{share}."]


def plain_profile_lines(plain: dict[str, Any] | None) -> list[str]:
    """The plain loop's batch profiled the same way: if it keeps the GPU busier, ours waits on the host."""
    if not plain:
        return []
    busy = "" if plain.get("gpu_busy") is None else f"; GPU busy {plain['gpu_busy']:.0%}"
    launches = "" if plain.get("launches") is None else f"; {plain['launches']} kernels"
    return ["", f"The plain loop's batch, profiled the same way: {plain['step_ms']:.1f} ms{busy}{launches}."]


def smoke_line(smoke: dict[str, Any]) -> str:
    """A train smoke run in one sentence: exit, speed, validations, checkpoints, logged gradient norms."""
    norms = ", ".join(
        f"{player.upper()} {_num(n['median'], '.3g')} ({n['non_finite']} logged NaN/Inf)"
        for player, n in smoke.get("grad_norms", {}).items()
    )
    return (
        f"{'OK' if smoke['ok'] else '**FAILED**'}: exit {smoke['returncode']}, {smoke['batches']} batches in "
        f"{smoke['seconds']:.0f} s wall, {_num(smoke.get('it_s'))} it/s while training (the run's own "
        f"time/batches_per_s: {_num(smoke.get('logged_it_s'))}, "
        f"time/data_share: {_num(smoke.get('data_share'), '.1%')}; memory/gpu_peak_gib: "
        f"{_num(smoke.get('gpu_peak_gib'))}), "
        f"{smoke['validations']} validation(s), checkpoints {', '.join(smoke['checkpoints']) or 'none'}; "
        f"median logged gradient norm {norms or 'not logged'}."
    )


def _num(value: Any, spec: str = ",.2f") -> str:
    return "-" if value is None else format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]


def markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown: targets first, then every figure, then what was skipped or failed."""
    m = summary.get("machine", {})
    device = m.get("gpu") or f"CPU ({m.get('cpu', '?')}, {m.get('cpu_cores', '?')} cores)"
    lines = [f"# sr-gan GPU check: {device}", ""]
    if summary.get("dry_run"):
        lines += ["**Dry run** (tiny networks on a CPU): the code paths and the format, not GPU figures.", ""]
    peaks = summary.get("peaks_tflops", {})
    lines += [
        f"{summary.get('started', '')}; took {summary.get('seconds', 0):.0f} s of a {summary.get('budget_s', 0):.0f} s "
        f"budget. torch {m.get('torch', '?')}, Lightning {m.get('lightning', '?')}, CUDA {m.get('cuda')}, "
        f"Python {m.get('python', '?')}. Matmul peak (measured): fp32 {_num(peaks.get('fp32'), '.3g')} TFLOP/s "
        f"(TF32 under float32_matmul_precision=high on GPUs), bf16 {_num(peaks.get('bf16'), '.3g')} TFLOP/s.",
        "",
        "## Targets (issue 8)",
        "",
    ]
    lines += _table(
        ["target", "measured", "met", "missed by", "what bounds it"],
        [
            [
                t["name"],
                f"{_num(t['measured'])} ({t['how']})",
                {True: "yes", False: "**no**", None: "-"}[t["met"]],
                t["missed_by"] or "",
                t.get("bound_by") or "",
            ]
            for t in summary.get("targets", [])
        ],
    )
    lines += ["", "## Training steps: ours (L.Trainer + SRGANModule) vs a plain PyTorch loop, same math", ""]
    lines += _table(
        ["stage", "size", "config", "ours it/s", "plain it/s", "plain in L.Trainer it/s", "ratio", "GFLOP/batch"]
        + ["utilisation", "ours GPU peak GiB"],
        [
            [
                s["stage"],
                f"{s['batch']} x {s['hr']} px",
                s["config"] + compilation_note(s.get("compiled")),
                _num(s.get("ours_it_s")),
                _num(s.get("plain_it_s")),
                _num(s.get("plain_in_lightning_it_s")),
                _num(s.get("ratio")),
                _num(s.get("gflop_per_batch"), ",.3g"),
                f"{_num(s.get('utilisation'), '.1%')} of {s.get('peak', '?')}",
                _num(s.get("ours_gpu_peak_gib"), ".1f"),
            ]
            for s in summary.get("steps", [])
        ],
    )
    lines += [
        "",
        "ratio = ours / plain (> 1: ours faster); utilisation = FLOPs/batch x ours' it/s / matmul peak; "
        "GPU peak: the most memory ours held (PyTorch's allocator, reserved), what a training run needs. "
        "Plain in L.Trainer: the plain loop's step as the training step of a LightningModule (measured for "
        "the targets' steps): against plain, what Lightning's loop costs; against ours, what our step adds.",
    ]
    for key, p in summary.get("profiles", {}).items():
        stage = key.split()[0]
        busy = "" if p.get("gpu_busy") is None else f"GPU busy {p['gpu_busy']:.0%} of the step, "
        launches = "" if p.get("launches") is None else f"{p['launches']} kernels; "
        lines += [
            "",
            f"## What bounds the {stage} step ({p.get('config')}, one batch of ours under torch.profiler)",
            "",
            f"{p.get('step_ms', 0):.1f} ms; {busy}{launches}{p.get('bound', '')}.",
            *plain_profile_lines(p.get("plain")),
            "",
        ]
        lines += _table(
            ["kernel" if p.get("device") == "cuda" else "operator", "calls", "ms", "share"],
            [
                [f"`{k['name'][:100]}`", str(k["calls"]), f"{k['ms']:.2f}", f"{k['share']:.1%}"]
                for k in p.get("top", [])
            ],
        )
        classes = ", ".join(f"{label} {share:.0%}" for label, share in p.get("classes", {}).items())
        host = ", ".join(f"{label} {ms:.2f} ms" for label, ms in p.get("host_ms_per_batch", {}).items())
        lines += ["", f"By class: {classes}.", "", f"Host time per batch of our step's parts: {host}."]
    for key, syncs in summary.get("host_syncs", {}).items():
        config, batches = syncs.get("config", "bf16"), syncs.get("batches")
        lines += [
            "",
            f"## Host syncs in the {key.split()[0]} step ({config}, {batches} steady-state batches of ours)",
            "",
        ]
        if not syncs.get("recorded"):
            lines += ["Not recorded: CUDA's sync debug mode needs a GPU."]
        elif not syncs.get("sites"):
            lines += ["None: the host never waited for the GPU."]
        else:
            lines += _table(
                ["call site (innermost first)", "syncs"], [[f"`{x['site']}`", str(x["count"])] for x in syncs["sites"]]
            )
    data = summary.get("data")
    if data:
        height, width = data.get("size", ["?", "?"])
        lines += [
            "",
            f"## Data path: crops/s (HR {data.get('hr_patch')} px, {data.get('images')} {width}x{height} PNGs)",
        ]
        lines += [""]
        rows = [[f"1 worker: {k}", f"{v:,.0f}"] for k, v in data.get("per_worker", {}).items()]
        loader = data.get("loader", {})
        rows += [
            [f"DataLoader, {k} workers, batch {data.get('batch')}, prepared", f"{v:,.0f}"] for k, v in loader.items()
        ]
        lines += _table(["path", "crops/s"], rows)
    if summary.get("upscale"):
        lines += ["", "## Upscale x4 of a 2K image (tiled, random-weight RRDBNet exported as safetensors)", ""]
        lines += _table(
            ["precision", "input", "tile", "compute s", "input MP/s", "CLI s (all of it)", "ok"],
            [
                [
                    u["precision"],
                    f"{u['input'][1]}x{u['input'][0]}",
                    str(u["tile"]),
                    f"{u['compute_s']:.2f}",
                    f"{u['input_megapixels_per_s']:.3f}",
                    _num(u["cli_s"], ".1f"),
                    "yes" if u["ok"] else f"**no**: {u['error']}",
                ]
                for u in summary["upscale"]
            ],
        )
    if degradation := summary.get("degradation"):
        lines += ["", "## Real-ESRGAN degradation (conf/degradation/realesrgan.yaml)", ""]
        lines += degradation_lines(degradation)
    for key, title in (("train_smoke", "Train smoke run"), ("train_smoke_fp16", "Train smoke run, 16-mixed")):
        if smoke := summary.get(key):
            lines += ["", f"## {title}", "", f"`{smoke['command']}`", "", smoke_line(smoke)]
            if not smoke["ok"]:
                lines += ["", "```", *smoke.get("log_tail", []), "```"]
    problems = [i for i in summary.get("items", []) if i.get("status") != "ok"]
    if problems:
        lines += ["", "## Skipped or failed", ""]
        lines += _table(["item", "status", "why"], [[i["name"], i["status"], i.get("error", "")] for i in problems])
    return "\n".join(lines) + "\n"
