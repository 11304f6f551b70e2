"""The step benchmarks compare like with like, and the prepared GPU check keeps working (its dry run)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch._dynamo.utils import counters
from torch.utils.data import DataLoader
from torchvision.io import write_png

from benchmarks import compiled_calls, gpu_report
from benchmarks.gpu_check import COMPILED, DRY_RUN, GPU, STEPS, Check, _logged
from benchmarks.plain_loop import PlainLoop
from benchmarks.profile_step import HOST_METHODS
from benchmarks.stages import CONFIGS, STAGES, build_stage
from benchmarks.step_timing import (
    PlainInLightning,
    Plan,
    Span,
    Window,
    compare,
    compilation_counts,
    fresh_compilation,
    matmul_tflops,
    ours_rate,
    plain_rate,
    utilisation,
)
from tests.helpers import run_module

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny networks on a shared 2-core machine: one thread is several times faster under load."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("stage_name", ["esrgan", "srgan", "psnr_srresnet"])
def test_the_plain_loop_does_the_math_of_our_step(stage_name: str, one_thread: None) -> None:
    """Two batches through L.Trainer + SRGANModule and through PlainLoop, from the same weights,
    leave the same generator, discriminator and EMA: the baseline is the same work, not less."""
    stage = build_stage(stage_name, "dry")
    batches = stage.batches(2, torch.device("cpu"))
    ours = stage.module(CONFIGS["fp32"])
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(ours, DataLoader(batches, batch_size=None))
    plain = PlainLoop(stage.module(CONFIGS["fp32"]), CONFIGS["fp32"], torch.device("cpu"))
    for batch in batches:
        plain.step(batch)
    networks = [(ours.generator, plain.g), (ours.discriminator, plain.d), (ours.generator_ema, plain.ema)]
    networks = [(mine, theirs) for mine, theirs in networks if theirs is not None]
    for mine, theirs in networks:
        for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)
    first = stage.module(CONFIGS["fp32"]).generator.state_dict()
    assert any(not torch.equal(first[k], v) for k, v in ours.generator.state_dict().items())  # it trained


def test_the_plain_step_inside_lightnings_loop_is_the_plain_loops_work(one_thread: None) -> None:
    """The third side of the GPU check (Lightning's loop around the plain step) trains exactly what the
    bare plain loop trains on the same batches: it differs from it by the loop alone."""
    stage = build_stage("esrgan", "dry")
    batches = stage.batches(2, torch.device("cpu"))
    inside = PlainLoop(stage.module(CONFIGS["fp32"]), CONFIGS["fp32"], torch.device("cpu"))
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False)
    trainer.fit(PlainInLightning(inside), DataLoader(batches, batch_size=None))
    bare = PlainLoop(stage.module(CONFIGS["fp32"]), CONFIGS["fp32"], torch.device("cpu"))
    for batch in batches:
        bare.step(batch)
    assert inside.iteration == bare.iteration == 2
    for mine, theirs in ((inside.g, bare.g), (inside.d, bare.d), (inside.ema, bare.ema)):
        for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    result = compare(
        stage, CONFIGS["fp32"], torch.device("cpu"), Plan(1, 1, 60.0), sides=("plain", "plain_in_lightning", "ours")
    )
    assert {"plain_it_s", "plain_in_lightning_it_s", "ours_it_s"} <= set(result)
    assert result["ratio"] == result["ours_it_s"] / result["plain_it_s"]
    assert result["ours_gpu_peak_gib"] is None and result["plain_gpu_peak_gib"] is None  # a CPU: no GPU memory


class _Recording:
    """A profiler that notes the batches it was started and stopped around."""

    def __init__(self, batches: int) -> None:
        self.batches, self.events, self.index = batches, [], -1

    def start(self) -> None:
        self.events.append(("start", self.index))

    def stop(self) -> None:
        self.events.append(("stop", self.index))


@pytest.mark.parametrize("batches", [1, 2])
def test_both_sides_profile_the_last_warm_up_batches(batches: int, one_thread: None) -> None:
    """The profiled batches end the warm-up on both sides: outside the timed window, same batches."""
    stage, plan = build_stage("psnr_srresnet", "dry"), Plan(warmup=3, max_batches=1, max_seconds=60.0)
    recording = _Recording(batches)
    span = Span(recording, plan.warmup)
    for index in range(5):
        recording.index = index
        span.before(index)
        span.after(index)
    assert recording.events == [("start", 3 - batches), ("stop", 2)]
    for measure in (plain_rate, ours_rate):  # both drive a Span: started and stopped once
        seen = _Recording(batches)
        measure(stage, CONFIGS["fp32"], torch.device("cpu"), plan, profiler=seen)
        assert [kind for kind, _ in seen.events] == ["start", "stop"]


def test_the_window_leaves_the_warm_up_out_and_stops_at_its_cap() -> None:
    window = Window(torch.device("cpu"), Plan(warmup=2, max_batches=3, max_seconds=1e9))
    stops = []
    for index in range(6):
        window.begin(index)
        stops.append(window.end(index))
    assert stops == [False, False, False, False, True, True] and window.batches == 3
    assert len(window.intervals) == 3 and window.rate > 0  # one interval per batch after the warm-up


class _Clock:
    """`time.perf_counter` advancing by the given steps, one per call."""

    def __init__(self, *steps: float) -> None:
        self.now, self.steps = 0.0, list(steps)

    def __call__(self) -> float:
        self.now += self.steps.pop(0) if self.steps else 0.0
        return self.now


def test_the_window_closes_at_its_time_cap_synchronised_and_a_cpu_rate_is_the_median(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The window closes once max_seconds have passed (a slow GPU never waits for max_batches), with
    the device synchronised at both ends (the host runs ahead of the GPU in between); a GPU's rate is
    batches over that time, a CPU's the median interval's (one load spike does not move it)."""
    synced = []
    monkeypatch.setattr("benchmarks.step_timing.sync", synced.append)
    for device, rate in ((torch.device("cuda"), 4 / 1.1), (torch.device("cpu"), 1 / 0.2)):
        synced.clear()
        monkeypatch.setattr("benchmarks.step_timing.time.perf_counter", _Clock(0.0, 0.2, 0.2, 0.5, 0.2))
        window = Window(device, Plan(warmup=1, max_batches=100, max_seconds=1.0))
        stops = []
        for index in range(7):
            window.begin(index)
            stops.append(window.end(index))
        assert stops == [False, False, False, False, True, True, True] and window.batches == 4
        assert synced == [device, device] and window.rate == pytest.approx(rate)


def test_a_comparison_takes_each_sides_best_round_and_its_own_gpu_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rounds alternate the sides; each side's best rate counts (other load only slows a run down),
    and on a GPU each side's peak memory is counted from its own start."""
    rates = {"plain": [2.0, 4.0], "ours": [3.0, 1.0]}
    sides = {side: lambda *args, side=side: rates[side].pop(0) for side in rates}
    monkeypatch.setattr("benchmarks.step_timing.SIDES", sides)
    resets = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", resets.append)
    monkeypatch.setattr("benchmarks.step_timing.gpu_peak_gib", lambda device: 2.5)
    stage = SimpleNamespace(name="esrgan", size="tiny", batch=2, patch=32)
    config = SimpleNamespace(name="bf16", compile=False)
    result = compare(stage, config, torch.device("cuda"), Plan(1, 1, 1.0), rounds=2, sides=("plain", "ours"))
    assert (result["plain_it_s"], result["ours_it_s"], result["ratio"]) == (4.0, 3.0, 0.75)
    assert len(resets) == 4 and result["ours_gpu_peak_gib"] == 2.5


def test_the_matmul_peak_is_the_best_of_three_and_utilisation_its_share(monkeypatch: pytest.MonkeyPatch) -> None:
    """2 n^3 FLOPs a product over the fastest of three timings; utilisation = FLOPs x rate / peak."""
    monkeypatch.setattr("benchmarks.step_timing.time.perf_counter", _Clock(0.0, 2.0, 8.0, 1.0, 9.0, 3.0))
    assert matmul_tflops(torch.device("cpu"), torch.float32, 4, repeats=10) == pytest.approx(2 * 4**3 * 10 / 1e12)
    assert utilisation(10**12, 2.0, 4.0) == 0.5


def test_each_compiled_side_starts_fresh_and_counts_its_own_compilation(one_thread: None) -> None:
    """Dynamo's cache and CUDA-graph trees are process-wide: without a fresh start, ours would run on
    the plain loop's compiled entries (and graphs) and report the plain loop's counts as its own."""
    stage, cpu, plan = build_stage("psnr_rrdb", "dry"), torch.device("cpu"), Plan(1, 1, 60.0)
    config = replace(CONFIGS["bf16+cl+compile"], compile="eager")
    plain_rate(stage, config, cpu, plan)
    assert compilation_counts()["graphs"] == 1  # G
    counters["stats"]["unique_graphs"] += 50  # left by an earlier side
    ours_rate(stage, config, cpu, plan)
    assert compilation_counts()["graphs"] == 1  # G compiled again, for ours alone
    result = compare(stage, config, cpu, plan)
    assert result["compiled"]["ours"] == result["compiled"]["plain"]
    assert result["compiled"]["ours"]["frames_in_window"] == 0  # G compiled in the warm-up batch
    torch.compile(lambda x: x + 1, backend="eager")(torch.ones(1))  # a compilation after the window opened
    assert compilation_counts()["frames_in_window"] == 1
    assert "compiled" not in compare(stage, CONFIGS["fp32"], cpu, plan)


@pytest.mark.slow  # about 18 s: dynamo and AOT autograd trace ESRGAN's five frames for each side
def test_ours_calls_its_compiled_graphs_as_the_plain_loop_does(one_thread: None, tmp_path: Path) -> None:
    """What CUDA-graph trees replay: the same compiled graphs (G, VGG, D in each grad mode and
    requires_grad state) called in the same order in every step, none compiled after the first step,
    no graph output kept alive into the next step; a validation (images of two sizes) and a
    checkpoint between steps call no compiled graph."""
    stage = build_stage("esrgan", "dry")
    plain = compiled_calls.trace_plain(stage, 4)
    ours = compiled_calls.trace_ours(stage, 4, validate_every=2, folder=tmp_path)
    assert (tmp_path / "last.ckpt").is_file()  # validated and checkpointed between steps
    assert len(plain.steps[0]) == 11  # forwards: G, VGG, D (G's step, D frozen), D (no grad); backwards; D twice
    assert ours.steps == plain.steps == plain.steps[:1] * 4
    assert ours.counts == plain.counts and ours.counts["graph_breaks"] == 0
    assert ours.counts["recompiles"] == 2  # D, in no-grad mode and on an input requiring no gradient
    assert ours.alive == plain.alive == [0] * 5


def test_the_call_trace_sees_a_graph_output_kept_into_the_next_step(
    one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instrument of the test above: a side that keeps G's output alive is seen doing so."""
    step = PlainLoop.step

    def keeping(loop: PlainLoop, batch: dict[str, torch.Tensor]) -> None:
        step(loop, batch)
        loop.kept = loop.g(batch["lr"])  # (B, 3, H, W), held until the next step replaces it

    monkeypatch.setattr(PlainLoop, "step", keeping)
    trace = compiled_calls.trace_plain(build_stage("psnr_rrdb", "dry"), 3)
    assert trace.alive[0] == 0 and min(trace.alive[1:]) > 0


def test_cuda_graphs_recorded_in_the_timed_window_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA the step table counts the CUDA graphs each side's tree recorded, and those recorded
    after the warm-up (in steady state a step replays; a recording waits for the device twice)."""
    from torch._inductor import cudagraph_trees

    class Node:  # a recorded graph and the graphs recorded after it on its paths
        def __init__(self, *children: Node) -> None:
            self.children = {"next": list(children)}

        def num_descendants(self) -> int:
            return sum(1 + child.num_descendants() for child in self.children["next"])

    fresh_compilation(CONFIGS["bf16+cl+compile"])
    tree = SimpleNamespace(roots={"g": [Node(Node(), Node(Node()))]})  # 4 graphs, recorded in the warm-up
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(cudagraph_trees, "get_manager", lambda device, create_if_none_exists: tree)
    Window(torch.device("cpu"), Plan(1, 5, 60.0)).begin(1)
    tree.roots["d"] = [Node()]  # one more, recorded in the window
    counts = compilation_counts()
    assert (counts["cudagraph_recordings"], counts["cudagraph_recordings_in_window"]) == (5, 1)


def test_each_recompilation_is_counted_once() -> None:
    """A function compiled three times (three dtypes) recompiled twice; dynamo's guard failures, once
    counted, said 1 + 2 = 3 (each recompilation lists every cache entry that failed)."""
    fresh_compilation(CONFIGS["bf16+cl+compile"])
    double = torch.compile(lambda x: x * 2, backend="eager")
    for dtype in (torch.float32, torch.float64, torch.float16):
        double(torch.ones(2, dtype=dtype))
    assert compilation_counts()["recompiles"] == 2


def test_the_report_names_what_each_side_compiled() -> None:
    same = {"graphs": 5, "graph_breaks": 0, "cudagraph_skips": 0}
    assert gpu_report.compilation_note({"ours": same, "plain": same}) == " (5 graphs)"
    assert gpu_report.compilation_note({"ours": same | {"graphs": 1}, "plain": same}) == " (1 graph; plain: 5 graphs)"
    skipped = same | {"cudagraph_skips": 2}
    note = gpu_report.compilation_note({"ours": skipped, "plain": same})
    assert note == " (5 graphs, 2 CUDA-graph skips; plain: 5 graphs)"
    late = same | {"cudagraph_recordings": 12, "cudagraph_recordings_in_window": 2}
    note = gpu_report.compilation_note({"ours": late, "plain": same | {"cudagraph_recordings": 10}})
    ours = "5 graphs, 12 CUDA graphs recorded, 2 CUDA graphs recorded in the timed window"
    assert note == f" ({ours}; plain: 5 graphs, 10 CUDA graphs recorded)"
    assert gpu_report.compilation_note(None) == ""


def test_the_degradation_report_states_both_ratios() -> None:
    figures = {"batch": 16, "hr": 256, "ours_ms": 40.0, "baseline_ms": 900.0, "feed": [16, 128], "feed_ms": 12.0}
    assert gpu_report.degradation_lines(figures | {"step_ms": 120.0})[-1] == (
        "ratio 22.5x the loader core; at the step's batch it costs 10.0% of the step."
    )
    assert gpu_report.degradation_lines(figures | {"step_ms": None})[-1] == "ratio 22.5x the loader core."


def _step(stage: str, config: str, ours: float, batch: int = 16) -> dict:
    return {"stage": stage, "config": config, "ours_it_s": ours, "plain_it_s": ours, "batch": batch, "hr": 128}


def test_targets_take_the_fastest_bf16_rung_and_say_by_how_much_they_are_missed() -> None:
    summary = {
        "steps": [
            _step("esrgan", "fp32", 30.0),  # not bf16: does not count for the bf16 target
            _step("esrgan", "bf16", 10.0),
            _step("esrgan", "bf16+cl", 12.0),
            _step("esrgan", "bf16+cl+compile", 11.0),  # the fastest, not the last
            _step("esrgan", "bf16+cl+graphs", None),  # failed: no figure
            _step("psnr_rrdb", "bf16", 60.0),  # the target itself: met
        ],
        "profiles": {"esrgan": {"bound": "host-bound: ..."}},
        "data": {"loader": {"16": 900.0, "8": 500.0}, "per_worker": {"prepared, maps kept open": 310.0}},
    }
    esrgan, psnr, loader = gpu_report.targets(summary)
    assert (esrgan["measured"], esrgan["how"], esrgan["met"]) == (12.0, "bf16+cl", False)
    assert esrgan["missed_by"] == "8.0 short (60% of the target; 1.7x to go)"
    assert esrgan["bound_by"] == "host-bound: ..."
    assert (psnr["target"], psnr["met"], psnr["missed_by"]) == (60.0, True, None)
    assert (loader["target"], loader["measured"], loader["met"]) == (3 * 16 * 12.0, 500.0, False)  # conf's 8 workers
    assert loader["bound_by"] == "one worker cuts 310 crops/s (prepared)" and "note" not in loader
    dry = gpu_report.targets(summary | {"dry_run": True})
    assert {row["note"] for row in dry} == {"dry run: tiny networks on a CPU, not a GPU figure"}


def test_the_report_of_a_check_that_measured_nothing_yet() -> None:
    """The summary is written after every item: a check stopped early still gives a readable one."""
    summary = {"machine": {}, "steps": [], "items": [{"name": "step esrgan bf16", "status": "skipped", "error": "x"}]}
    summary["targets"] = gpu_report.targets(summary)
    assert [t["missed_by"] for t in summary["targets"]] == ["not measured", "not measured"]
    text = gpu_report.markdown(summary)
    assert "## Targets" in text and "| step esrgan bf16 | skipped | x |" in text


def test_an_item_runs_only_within_the_budget_and_a_failure_costs_only_itself(tmp_path: Path) -> None:
    """An item that needs more seconds than are left is skipped, saying so; one that raises is
    recorded failed with its line, and the check goes on; both are in the summary at once."""
    check = Check(DRY_RUN, tmp_path / "out", tmp_path, budget_s=60.0)
    assert check.item("too long", 600.0, lambda: 1) is None

    def fails() -> None:
        raise ValueError("no such stage")

    assert check.item("failing", 1.0, fails) is None and check.item("fine", 1.0, lambda: 7) == 7
    items = [(i["name"], i["status"], i.get("error", "")) for i in check.summary["items"]]
    assert items[0][:2] == ("too long", "skipped") and items[0][2].startswith("time budget: ")
    assert items[1:] == [("failing", "failed", "ValueError: no such stage"), ("fine", "ok", "")]
    assert (
        "| failing | failed | ValueError: no such stage |" in (tmp_path / "out" / gpu_report.MARKDOWN_NAME).read_text()
    )


def test_a_smoke_runs_log_gives_its_steady_speed_its_gpu_peak_and_its_non_finite_norms(tmp_path: Path) -> None:
    """From the run's metrics.csv: the median logged speed without the first interval (start-up), the
    highest GPU peak, the validations, and each player's median finite norm and its NaN/Inf count."""
    metrics = tmp_path / "metrics.csv"
    header = "step,time/batches_per_s,time/data_share,memory/gpu_peak_gib,val/psnr,train/grad_norm_g,train/grad_norm_d"
    rows = [
        "3,100.0,0.5,1.0,,1.0,2.0",  # the start-up interval
        "7,10.0,0.1,3.0,,nan,4.0",
        "7,,,,25.0,,",
        "11,12.0,0.3,2.0,,2.0,inf",
        "11,,,,26.0,,",
        "15,11.0,0.2,2.5,,3.0,6.0",
    ]
    metrics.write_text("\n".join([header, *rows]) + "\n")
    logged = _logged(metrics)
    assert (logged["validations"], logged["logged_it_s"], logged["data_share"], logged["gpu_peak_gib"]) == (
        2,
        11.0,
        0.2,
        3.0,
    )
    assert logged["grad_norms"] == {"g": {"median": 2.0, "non_finite": 1}, "d": {"median": 4.0, "non_finite": 1}}


def test_a_smoke_run_that_exits_0_without_validating_or_checkpointing_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 0 alone does not pass the smoke run: it must also have validated and written best.ckpt and
    last.ckpt. A precision given replaces the mode's (one trainer.precision= reaches the command)."""
    from benchmarks import gpu_check

    folders = [tmp_path / "hr", tmp_path / "lr"]
    for folder, side in zip(folders, (32, 8)):
        folder.mkdir()
        write_png(torch.zeros(3, side, side, dtype=torch.uint8), str(folder / "a.png"))
    commands = []

    def run_cli(module: str, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        commands.append(args)
        return subprocess.CompletedProcess(args, 0, "", "done\n")  # wrote no metrics, no checkpoint

    monkeypatch.setattr(gpu_check, "run_cli", run_cli)
    monkeypatch.setattr(gpu_check.Check, "images", lambda self: tuple(folders))
    monkeypatch.setattr(gpu_check.Check, "random_generator", lambda self: tmp_path / "g.safetensors")
    check = gpu_check.Check(gpu_check.GPU, tmp_path / "out", tmp_path, budget_s=450.0)
    with pytest.raises(RuntimeError, match=r"the training smoke run failed \(exit 0\)"):
        check.smoke("train_smoke_fp16", "16-mixed")
    assert not check.summary["train_smoke_fp16"]["ok"]
    assert [a for a in commands[0] if a.startswith("trainer.precision=")] == ["trainer.precision=16-mixed"]


# the dry run's repeats of the CUDA-graphs rungs under its mode-less eager backend (compiled once)
DRY_RUN_REPEATS = {("esrgan", "bf16+cl+compile"), ("psnr_rrdb", "bf16+cl+compile")}


def test_the_dry_run_compiles_each_stage_once_per_set_of_switches(tmp_path: Path) -> None:
    """The dry run's eager backend has no modes, so a CUDA-graphs rung there is its +compile rung
    again (about 10 s of CI): it runs once; on a GPU every compiled rung runs."""
    gpu, dry = (Check(mode, tmp_path, tmp_path, 1.0).compiled_pairs() for mode in (GPU, DRY_RUN))
    assert gpu == COMPILED
    assert dry == [pair for pair in COMPILED if pair not in DRY_RUN_REPEATS]


@pytest.mark.slow  # every item of the GPU check at tiny sizes, with four Python processes: one to a few minutes
def test_the_gpu_check_dry_run_writes_its_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_module(
        "benchmarks.gpu_check", "--dry-run", "--out", str(out), "--work", str(tmp_path / "work"), cwd=ROOT, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / gpu_report.JSON_NAME).read_text())
    expected = {
        "machine",
        "peaks_tflops",
        "steps",
        "profiles",
        "host_syncs",
        "data",
        "upscale",
        "degradation",
        "train_smoke",
        "train_smoke_fp16",
        "targets",
    }
    assert expected <= set(summary) and summary["dry_run"] is True
    assert {i["name"]: i["status"] for i in summary["items"] if i["status"] != "ok"} == {}
    measured = {(s["stage"], s["config"]) for s in summary["steps"]}
    assert measured == set(STEPS) | set(COMPILED) - DRY_RUN_REPEATS
    assert {c for _, c in measured} == set(CONFIGS) and {s for s, _ in measured} == set(STAGES)
    for step in summary["steps"]:
        assert step["ours_it_s"] > 0 and step["plain_it_s"] > 0 and step["gflop_per_batch"] > 0
        assert step["ratio"] == pytest.approx(step["ours_it_s"] / step["plain_it_s"])
        if "+c" in step["config"].replace("+cl", ""):  # compiled rungs: each side compiled (dynamo, eager backend)
            assert step["compiled"]["ours"]["graphs"] > 0 and step["compiled"]["plain"]["graphs"] > 0
    for stage in ("esrgan", "psnr_rrdb", "esrgan bf16+cl+graphs", "psnr_rrdb bf16+cl+graphs"):
        assert summary["profiles"][stage]["plain"]["step_ms"] > 0  # the plain loop profiled beside ours
        config = stage.partition(" ")[2] or "bf16"
        assert summary["host_syncs"][stage] == {
            "batches": 2,
            "recorded": False,
            "syncs": 0,
            "sites": [],
            "config": config,
        }
        profile = summary["profiles"][stage]
        assert profile["config"] == config
        assert (
            len(profile["top"]) == 10
            and profile["bound"]
            and set(profile["host_ms_per_batch"]) == set(HOST_METHODS)
            and profile["host_ms_per_batch"]["training_step (all of it)"] > 0
        )
    assert [t["name"].split(",")[0] for t in summary["targets"]] == [
        "ESRGAN stage",
        "PSNR stage (RRDBNet + L1)",
        "DataLoader",
    ]
    assert all(t["measured"] is not None and t["met"] is not None for t in summary["targets"])
    assert set(summary["data"]["loader"]) == {"1", "2"}
    assert [u["precision"] for u in summary["upscale"]] == ["fp32", "bf16"] and all(u["ok"] for u in summary["upscale"])
    smoke = summary["train_smoke"]
    assert smoke["ok"] and smoke["validations"] >= 1 and smoke["it_s"] > 0
    assert smoke["logged_it_s"] > 0 and 0 <= smoke["data_share"] < 1  # the run's own time/* (SpeedMonitor)
    assert smoke["gpu_peak_gib"] is None  # a CPU run logs no GPU memory
    assert {"best.ckpt", "last.ckpt"} <= set(smoke["checkpoints"])
    assert smoke["grad_norms"]["g"]["median"] > 0 and smoke["grad_norms"]["d"]["non_finite"] == 0
    fp16 = summary["train_smoke_fp16"]  # on a CPU Lightning runs it in bf16-mixed: the item's code path
    assert fp16["ok"] and "trainer.precision=16-mixed" in fp16["command"] and "32-true" not in fp16["command"]
    text = (out / gpu_report.MARKDOWN_NAME).read_text()
    assert "**Dry run**" in text and all(stage in text for stage in STAGES)
    assert "## Train smoke run, 16-mixed" in text and "median logged gradient norm G " in text


def test_the_sync_recorder_counts_sync_warnings_by_call_site() -> None:
    """On a GPU torch warns at each synchronizing operation in sync debug mode "warn"; the recorder
    turns those warnings into counts per Python call site (here the warnings are raised by hand)."""
    import warnings

    from benchmarks.host_syncs import SYNC_MESSAGE, SyncRecorder

    def lightning_like_read() -> None:
        warnings.warn(f"called a {SYNC_MESSAGE}", UserWarning, stacklevel=1)

    recorder = SyncRecorder(torch.device("cpu"))
    recorder.start()
    for _ in range(3):
        lightning_like_read()
    recorder.stop()
    with pytest.warns(UserWarning, match=SYNC_MESSAGE):
        lightning_like_read()  # after stop: an ordinary warning, not counted
    summary = recorder.summary()
    assert summary["syncs"] == 3 and summary["recorded"] is False  # a CPU: the debug mode itself is off
    [site] = summary["sites"]
    assert site["count"] == 3 and site["site"].startswith("tests/test_bench.py:")
    assert "lightning_like_read" in site["site"]


def test_a_compiled_rung_whose_profile_fails_keeps_its_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the compile child, the CUDA-graphs rung is measured, then profiled: a profiler failure (a
    GPU-only path) is the profile's item, not a lost rung nor a KeyError that drops the child's rest.
    A rung that fails to measure is its own failed item, with its line."""
    from benchmarks import gpu_check

    def measure(self: gpu_check.Check, stage: str, config: str) -> dict:
        if config == "bf16+cl+compile":
            raise RuntimeError("CUDA out of memory")
        return {"stage": stage, "config": config, "batch": 16, "hr": 128, "ours_it_s": 5.0, "plain_it_s": 5.0}

    def profile(self: gpu_check.Check, stage: str, config: str = "bf16") -> dict:
        raise RuntimeError("CUPTI failed")

    monkeypatch.setattr(gpu_check.Check, "measure", measure)
    monkeypatch.setattr(gpu_check.Check, "profile", profile)
    monkeypatch.setattr(gpu_check.Check, "host_syncs", lambda self, stage, config: {"sites": [], "config": config})
    monkeypatch.setattr(gpu_check.Check, "add_utilisation", lambda self, result: None)
    pairs = [("esrgan", "bf16+cl+graphs"), ("esrgan", "bf16+cl+compile"), ("psnr_rrdb", "bf16+cl+graphs")]

    class Child:  # the child process, run in this one
        def __init__(self, command: list[str], **kwargs: object) -> None:
            self.returncode, self.pid = 0, 0
            listing = Path(command[command.index("--child-json") + 1])
            gpu_check.child_steps(gpu_check.GPU, ",".join(f"{s}:{c}" for s, c in pairs), listing)

        def wait(self, timeout: float | None = None) -> int:
            waits.append(timeout)
            return 0

    waits: list[float | None] = []
    monkeypatch.setattr(gpu_check.subprocess, "Popen", Child)
    monkeypatch.setattr(gpu_check.Check, "compiled_pairs", lambda self: pairs)
    check = gpu_check.Check(gpu_check.GPU, tmp_path / "out", tmp_path, budget_s=100.0)
    check.compiled_steps()
    assert waits[0] <= 100.0 - gpu_check.RESERVE_S  # the child gets what the budget leaves, not its whole cap
    status = {i["name"]: i["status"] for i in check.summary["items"]}
    failed = [i for i in check.summary["items"] if i["name"] == "step esrgan bf16+cl+compile"]
    assert [(i["status"], i["error"]) for i in failed] == [("failed", "RuntimeError: CUDA out of memory")]
    graphs = [pair for pair in pairs if pair[1] == "bf16+cl+graphs"]
    assert [(s["stage"], s["config"]) for s in check.summary["steps"]] == graphs
    for stage, config in graphs:
        assert status[f"step {stage} {config}"] == "ok" and status[f"profile {stage} {config}"] == "failed"
        assert check.summary["host_syncs"][f"{stage} {config}"]["config"] == config
    assert "profiles" not in check.summary["steps"][0] and "profile_error" not in check.summary["steps"][0]


def test_a_compiled_rung_killed_while_profiled_keeps_its_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent kills the compile child at its time limit, maybe while a CUDA-graphs rung is being
    profiled (a recompilation): the rung's measured figures are in the child's listing already."""
    from benchmarks import gpu_check

    class Killed(BaseException):  # stands in for SIGKILL: nothing after it runs
        pass

    def measure(self: gpu_check.Check, stage: str, config: str) -> dict:
        return {"stage": stage, "config": config, "ours_it_s": 5.0, "plain_it_s": 6.0}

    def profile(self: gpu_check.Check, stage: str, config: str = "bf16") -> dict:
        raise Killed

    monkeypatch.setattr(gpu_check.Check, "measure", measure)
    monkeypatch.setattr(gpu_check.Check, "profile", profile)
    listing = tmp_path / "compiled_steps.json"
    with pytest.raises(Killed):
        gpu_check.child_steps(gpu_check.GPU, "psnr_rrdb:bf16+cl+graphs,esrgan:bf16+cl+graphs", listing)
    [rung] = json.loads(listing.read_text())
    assert (rung["stage"], rung["ours_it_s"], rung["plain_it_s"]) == ("psnr_rrdb", 5.0, 6.0) and "seconds" in rung


def test_the_gpu_profile_counts_kernels_not_the_gpu_spans_of_annotations() -> None:
    """On a GPU, key_averages also holds the device-side spans of record_function ranges (the
    H200's top "kernel" was Optimizer.step#Adam.step, 13 %): they cover kernels already counted,
    so they would inflate the kernel time, the GPU busy share and the optimizer's class."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    from benchmarks.profile_step import StepProfiler

    def event(name: str, us: float, annotation: bool = False) -> SimpleNamespace:
        return SimpleNamespace(
            key=name, count=1, device_type=DeviceType.CUDA, self_device_time_total=us, is_user_annotation=annotation
        )

    events = [
        event("Optimizer.step#Adam.step", 8000.0, annotation=True),
        event("Torch-Compiled Region: 0/0", 30000.0, annotation=True),
        event("multi_tensor_apply_kernel", 6000.0),
        event("sm90_xmma_fprop_implicit_gemm", 24000.0),
        SimpleNamespace(key="aten::mm", count=1, device_type=DeviceType.CPU, self_device_time_total=0.0),
    ]
    profiler = StepProfiler(torch.device("cpu"))
    profiler.device, profiler.wall = torch.device("cuda"), 0.060
    profiler.profile = SimpleNamespace(key_averages=lambda: events)
    summary = profiler.summary()
    assert [k["name"] for k in summary["top"]] == ["sm90_xmma_fprop_implicit_gemm", "multi_tensor_apply_kernel"]
    assert summary["kernel_ms"] == pytest.approx(30.0) and summary["gpu_busy"] == pytest.approx(0.5)
    assert summary["launches"] == 2 and summary["classes"]["optimizer and EMA (foreach)"] == pytest.approx(0.2)
    events[2].count = 40  # one kernel name launched 40 times a batch (one per parameter group, say)
    top = profiler.summary(top=1)  # the classes count every kernel, not only the top ones listed
    assert top["launches"] == 41 and top["classes"]["optimizer and EMA (foreach)"] == pytest.approx(0.2)
    assert top["bound"] == (
        "host-bound: the GPU runs kernels 50% of the step; the rest is Python, Lightning and kernel launches "
        "(torch.compile fuses kernels, CUDA graphs remove launches); convolution and matmul 80% of kernel time"
    )
    profiler.wall = 0.031  # the GPU busy 97% of the step
    assert profiler.summary()["bound"].startswith("GPU-bound (97% busy): convolution and matmul take 80% of kernel")


def test_host_timers_count_each_methods_host_time_per_batch_and_leave_it_as_it_was() -> None:
    """A method called twice a batch counts twice its median call; one never called counts 0; the
    methods are the classes' own again afterwards."""
    from benchmarks.profile_step import HOST_METHODS, host_summary, host_timers
    from sr_gan.lit.guard import NonFiniteGuard

    before = {label: owner.__dict__[name] for label, (owner, name) in HOST_METHODS.items()}
    with host_timers() as calls:
        guard = NonFiniteGuard(patience=1)
        for batch in range(4):
            for _ in range(2):
                guard.update({"l_g_pix": torch.tensor(1.0)}, batch=batch)
    assert len(calls["non-finite guard"]) == 8
    per_batch = host_summary({"non-finite guard": [0.001] * 8}, batches=4)
    assert per_batch["non-finite guard"] == pytest.approx(2.0) and per_batch["schedulers"] == 0.0
    assert {label: owner.__dict__[name] for label, (owner, name) in HOST_METHODS.items()} == before


def test_a_targets_bound_comes_from_the_nearest_profiled_rung() -> None:
    """The fused CUDA-graphs rung has no profile of its own: its bound is the CUDA-graphs rung's
    (GPU-bound, say), not the eager bf16 step's host-bound one."""
    profiles = {"esrgan": {"bound": "host-bound"}, "esrgan bf16+cl+graphs": {"bound": "GPU-bound"}}
    for config, bound in [
        ("bf16+cl+graphs+fused", "GPU-bound"),
        ("bf16+cl+graphs", "GPU-bound"),
        ("bf16+cl+compile", "host-bound"),
        ("bf16", "host-bound"),
    ]:
        assert gpu_report.bound_of(profiles, "esrgan", {"config": config}) == bound, config
    assert gpu_report.bound_of({}, "esrgan", {"config": "bf16"}) is None
    assert gpu_report.bound_of(profiles, "esrgan", None) == "host-bound"


def test_a_fit_failing_mid_recording_leaves_no_recorder_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fit that fails between the span's start and stop must not leave CUDA's sync debug mode on
    (every later sync a warning and a stack walk) nor the profiler running (every later profile
    item would fail to start its own)."""
    import warnings

    from benchmarks import gpu_check

    modes: list[str] = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def failing_fit(stage: object, config: object, device: object, plan: object, *, profiler: object) -> float:
        profiler.start()  # the span started it; the batch then fails
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(gpu_check, "ours_rate", failing_fit)
    monkeypatch.setattr(gpu_check.Check, "stage", lambda self, name: None)
    monkeypatch.setattr(gpu_check.Check, "config", lambda self, name: CONFIGS["bf16"])
    check = gpu_check.Check(gpu_check.DRY_RUN, tmp_path / "out", tmp_path, budget_s=60.0)
    shown = warnings.showwarning
    with pytest.raises(RuntimeError, match="out of memory"):
        check.profile("esrgan")
    assert not torch._C._autograd._profiler_enabled()
    check.device = torch.device("cuda")  # the sync recorder's GPU path, with the debug mode mocked
    with pytest.raises(RuntimeError, match="out of memory"):
        check.host_syncs("esrgan")
    assert modes == ["warn", "default"] and warnings.showwarning is shown


def test_the_default_gpu_budget_runs_both_smoke_runs_and_the_data_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The items' seconds as on the H200 (2026-11-26, with the sides and items added since), the
    compile child taking its whole cap: the 16-mixed smoke run, which only a GPU can check, and the
    data path (a target) still fit the default budget (the 16-mixed run came last and never did)."""
    from benchmarks import gpu_check

    clock = [0.0]
    monkeypatch.setattr(gpu_check.time, "perf_counter", lambda: clock[0])

    def takes(seconds: float):  # noqa: ANN202
        return lambda *args, **kwargs: clock.__setitem__(0, clock[0] + seconds)

    Check = gpu_check.Check
    monkeypatch.setattr(Check, "write", lambda self: None)
    monkeypatch.setattr(Check, "peaks", takes(1.0))
    seconds = {("esrgan", "bf16"): 31.0, ("psnr_rrdb", "bf16"): 9.0}  # three sides each; later eager rungs 7 s
    monkeypatch.setattr(Check, "step", lambda self, stage, config: takes(seconds.get((stage, config), 7.0))())
    monkeypatch.setattr(Check, "profile", takes(6.0))
    monkeypatch.setattr(Check, "host_syncs", takes(5.0))
    monkeypatch.setattr(Check, "compiled_steps", lambda self: takes(min(self.remaining() - 10.0, 260.0))())
    monkeypatch.setattr(Check, "smoke", takes(42.0))  # 150 batches at ~7 it/s and ~21 s of start-up
    monkeypatch.setattr(Check, "data", takes(18.0))
    monkeypatch.setattr(Check, "upscale", takes(27.0))
    monkeypatch.setattr(Check, "degradation", takes(8.0))
    summary = Check(gpu_check.GPU, Path("unused"), Path("unused"), gpu_check.GPU.budget_s).run()
    status = {i["name"]: i["status"] for i in summary["items"]}
    assert len(status) == len(summary["items"])  # each item once: the targets' steps are not measured again
    assert status["train smoke"] == status["train smoke 16-mixed"] == status["data path"] == "ok"
    assert status["compiled steps"] == "ok"


def test_the_report_of_a_gpu_summary_with_the_items_added_since_the_h200_run() -> None:
    """The report's GPU-only branches (kernel tables, recorded host syncs, CUDA-graph counts, the
    16-mixed run, the degradation against the step), from the H200 run's JSON with the new fields."""
    summary = json.loads((ROOT / "benchmarks/results/gpu_check_h200_2026-11-26.json").read_text())
    esrgan = summary["steps"][0]
    graphs = {"graphs": 10, "graph_breaks": 0, "cudagraph_skips": 2}
    summary["steps"] += [
        esrgan
        | {"config": "bf16+cl+graphs", "ours_it_s": 17.3, "compiled": {"ours": graphs, "plain": graphs}}
        | {"ours_gpu_peak_gib": 41.25},
        esrgan | {"config": "bf16+cl+graphs+fused", "ours_it_s": 19.0, "plain_in_lightning_it_s": None},
    ]
    plain = {"step_ms": 100.0, "kernel_ms": 50.0, "gpu_busy": 0.5, "launches": 9000}
    for profile in summary["profiles"].values():
        profile["plain"] = plain
    summary["profiles"]["esrgan bf16+cl+graphs"] = summary["profiles"]["esrgan"] | {"bound": "GPU-bound (90% busy)"}
    site = {"site": "lightning/pytorch/loops/x.py:1 f", "count": 3}
    recorded = {"batches": 2, "recorded": True}
    summary["host_syncs"] = {
        "esrgan": recorded | {"syncs": 3, "sites": [site], "config": "bf16"},
        "psnr_rrdb bf16+cl+graphs": recorded | {"syncs": 0, "sites": [], "config": "bf16+cl+graphs"},
        "esrgan bf16+cl+graphs": {"batches": 2, "recorded": False, "config": "bf16+cl+graphs"},
    }
    summary["degradation"] = {"batch": 16, "hr": 256, "ours_ms": 4.0, "baseline_ms": 900.0, "feed": [16, 128]}
    summary["degradation"] |= {"feed_ms": 2.0, "step_ms": None}
    norms = {"g": {"median": None, "non_finite": 0}, "d": {"median": 1.5, "non_finite": 3}}
    summary["train_smoke"] |= {"grad_norms": norms, "logged_it_s": None, "data_share": None, "gpu_peak_gib": 37.5}
    summary["train_smoke_fp16"] = summary["train_smoke"] | {"ok": False, "returncode": 1, "log_tail": ["Boom"]}
    summary["targets"] = gpu_report.targets(summary)
    assert summary["targets"][0]["bound_by"] == "GPU-bound (90% busy)"  # the fused rung: its graphs profile
    text = gpu_report.markdown(summary)
    assert "# sr-gan GPU check: NVIDIA H200" in text and "| kernel | calls | ms | share |" in text
    assert "| `lightning/pytorch/loops/x.py:1 f` | 3 |" in text and "None: the host never waited" in text
    assert "bf16+cl+graphs (10 graphs, 2 CUDA-graph skips)" in text and "ratio 225.0x the loader core." in text
    assert "## Train smoke run, 16-mixed" in text and "D 1.5 (3 logged NaN/Inf)" in text
    assert "**FAILED**: exit 1" in text and "\n```\nBoom\n```\n" in text  # the failed run's log tail
    assert "Not recorded: CUDA's sync debug mode needs a GPU." in text
    assert "| **no** |" in text  # a missed target stands out
    assert "memory/gpu_peak_gib: 37.50)" in text
    assert "| 3.2% of bf16 | 41.2 |" in text and "| 3.2% of bf16 | - |" in text  # ours' GPU peak per rung
