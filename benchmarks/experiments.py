"""The benchmark's experiments: each a function that measures on the real clips and returns data.

Nothing here writes prose; `report` turns what one run measured into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from infotok.batch import TokenBatch
from infotok.eval import (
    Clip,
    clip_at,
    clip_rates,
    decode_clip,
    fvd_of,
    load_clip,
    make_clip,
    measure_clip,
)
from infotok.files import VIDEO_SUFFIXES
from infotok.ledger import MASK_BPP16
from infotok.model import InfoTok
from infotok.perceptual import Perceptual
from infotok.router import global_elbo_rate
from infotok.video import iter_frames, probe, write_video

from .peers import binary_search_rate, oracle_rates

RATES = [1.0, 0.75, 0.5, 0.25, 0.125]
TABLE_RATES = [0.75, 0.5]  # BPP16 0.81 and 0.56, the paper's Table 1 operating points
ORACLE_GRID = [k / 16 for k in range(1, 17)]
SEARCH_THRESHOLDS = [0.01, 0.02, 0.04, 0.08]  # MSE on [-1, 1]; ElasticTok uses 0.003 for a ~30 dB model


ROOT = Path(__file__).resolve().parents[1]


def report_main(argv, doc: str, name: str, markdown: str, run, report) -> int:
    """The command line of a benchmark that measures into `bench_out/NAME.json` and renders `markdown` from it:
    `--videos`, `--json`, `--markdown`, and `--report-only JSON` (re-render without measuring)."""
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc.split("\n\n")[0])
    p.add_argument("--videos", type=Path, default=ROOT.parent / "shared" / "data" / "videos")
    p.add_argument("--json", type=Path, default=ROOT / "bench_out" / f"{name}.json")
    p.add_argument("--markdown", type=Path, default=ROOT / markdown)
    p.add_argument("--report-only", type=Path, help="re-render the report from this JSON")
    args = p.parse_args(argv)
    result = json.loads(args.report_only.read_text()) if args.report_only else run(args.videos)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    args.markdown.write_text(report(result, f"python -m benchmarks.{name}"))
    print(args.markdown.read_text())
    return 0


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def motion(frames: np.ndarray) -> float:
    """Mean absolute change between consecutive frames (uint8 levels): how much a clip moves."""
    if len(frames) < 2:
        return 0.0
    return float(np.abs(np.diff(frames.astype(np.int16), axis=0)).mean())


def spatial_detail(frames: np.ndarray, factor: int = 8) -> float:
    """Mean absolute error (uint8 levels) of each frame against its `factor`x`factor` average-pooled,
    bilinearly re-upsampled copy: a model-free measure of how much fine spatial detail a clip has."""
    x = torch.from_numpy(frames).float().permute(0, 3, 1, 2)
    h, w = (x.shape[2] // factor) * factor, (x.shape[3] // factor) * factor
    x = x[:, :, :h, :w]
    smooth = torch.nn.functional.interpolate(
        torch.nn.functional.avg_pool2d(x, factor), scale_factor=factor, mode="bilinear", align_corners=False
    )
    return float((smooth - x).abs().mean())


@dataclass
class Setup:
    """What every experiment reads: the clips' files, the protocol and the optional metrics."""

    videos: list[Path]
    size: int
    frames: int
    vmaf: bool
    perceptual: Perceptual

    def clips(self, model: InfoTok, crop: bool = True) -> list[Clip]:
        return [load_clip(model, v, self.size, self.frames, crop=crop) for v in self.videos]

    def quality_kwargs(self, rate: float, table: bool = True) -> dict:
        """The slower metrics (VMAF, LPIPS, FVD) only at the table's operating points."""
        at_table = table and rate in TABLE_RATES + [1.0]
        return {"with_vmaf": self.vmaf and at_table, "perceptual": self.perceptual if at_table else None}


def list_clips(folder: str | Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


@dataclass
class Curves:
    """Rate-distortion points per method, and the per-video rows behind them."""

    points: dict[str, list[dict]] = field(default_factory=dict)
    per_video: list[dict] = field(default_factory=list)

    def add(
        self,
        method: str,
        rate: float,
        rows: list[dict],
        clips: list[Clip],
        masked: bool = True,
        extra: dict | None = None,
    ) -> dict:
        """Summarize one run (mean over its clips) of `method` at average `rate`."""
        fvd = fvd_of(rows, clips)
        point = {
            "method": method,
            "videos": len(rows),
            "rate": rate,
            "realized_rate": float(np.mean([r["realized_rate"] for r in rows])),
        }
        point["bpp16"] = point["realized_rate"] + (MASK_BPP16 if masked else 0.0)
        for key in ("psnr", "ssim", "vmaf", "lpips", "bpp16_file"):
            if all(key in r for r in rows):
                point[key] = float(np.mean([r[key] for r in rows]))
        point |= (extra or {}) | ({"fvd": fvd} if fvd is not None else {})
        self.points.setdefault(method, []).append(point)
        self.per_video.extend(r | {"method": method, "avg_rate": rate} for r in rows)
        log(f"{method} rate {rate:g}: realized {point['realized_rate']:.3f} PSNR {point['psnr']:.2f}")
        return point

    def at(self, method: str, rate: float) -> dict:
        return next(p for p in self.points[method] if abs(p["rate"] - rate) < 1e-9)


def measure(
    model: InfoTok,
    clip: Clip,
    rate: float,
    selection: str = "error",
    quality: bool = True,
    fill: str = "mask",
    **kwargs,
) -> dict:
    """One clip at one rate: its tokens re-selected from the clip's single encode, decoded with
    `fill`, scored."""
    return {"rate": rate} | measure_clip(
        model, clip, clip_at(model, clip, rate, selection, fill=fill), quality, **kwargs
    )


def psnr_grid(
    model: InfoTok, clips: list[Clip], rates: list[float], selection: str = "error", fill: str = "mask"
) -> np.ndarray:
    """PSNR of every clip at every rate (error-ranked tokens by default): the oracle's table."""
    return np.array([[measure(model, c, r, selection, quality=False, fill=fill)["psnr"] for r in rates] for c in clips])


# ------------------------------------------------------------------------------ experiments
def fixed_rate(setup: Setup, base: InfoTok, curves: Curves) -> dict:
    """The fixed-rate base tokenizer at rate 1, and what its clips hold (content measures)."""
    clips = setup.clips(base)
    curves.add(
        "fixed (base)",
        1.0,
        [measure(base, c, 1.0, with_vmaf=setup.vmaf, perceptual=setup.perceptual) for c in clips],
        clips,
        masked=False,
    )
    return {
        c.name: {"base_score": c.score, "detail": spatial_detail(c.frames), "motion": motion(c.frames)} for c in clips
    }


def flex_sweeps(setup: Setup, model: InfoTok, clips: list[Clip], curves: Curves) -> None:
    """InfoTok-Flex under each rate strategy at every rate, then the selection ablation."""
    for strategy in ("static", "global_elbo", "uniform"):
        table = strategy != "uniform"
        for rate in RATES:
            rows = [
                measure(model, c, r, **setup.quality_kwargs(rate, table)) | {"clip_rate": r, "score": c.score}
                for c, r in zip(clips, clip_rates(model, strategy, rate, clips, seed=0))
            ]
            curves.add(f"InfoTok-Flex {strategy}", rate, rows, clips)
    for selection in ("order", "random", "temporal"):
        for rate in TABLE_RATES:
            curves.add(
                f"InfoTok-Flex static, {selection} selection",
                rate,
                [measure(model, c, rate, selection) for c in clips],
                clips,
            )


def still_versus_moving(model: InfoTok, clips: list[Clip], rate: float = 0.5) -> dict[str, dict]:
    """Each clip moving and with its first frame held still for all frames: the rate `tokenize` gives
    each under global_elbo at `rate` (a clip alone, no balancing), its PSNR there, and the still
    shot's PSNR at static `rate`. Does the router spend less on a still shot, and at what cost?"""
    out = {}
    for c in clips:
        held = make_clip(model, c.name, np.repeat(c.frames[:1], len(c.frames), 0))
        row = {"held_score": held.score}
        for label, clip in (("moving", c), ("still", held)):
            r = global_elbo_rate(rate, clip.score, float(model.score_mean))
            row[label] = {
                "rate": r,
                "kept": int(clip_at(model, clip, r).mask.sum()),
                "psnr": measure(model, clip, r, quality=False)["psnr"],
            }
        row["still"]["psnr_static"] = measure(model, held, rate, quality=False)["psnr"]
        out[c.name] = row
    return out


def oracle(model: InfoTok, clips: list[Clip], curves: Curves) -> None:
    """The paper's "Optimal": per-clip PSNR at every rate k/16, then the best assignment per average rate."""
    grid = psnr_grid(model, clips, ORACLE_GRID)
    for rate in RATES:
        picks, mean_psnr = oracle_rates(grid, ORACLE_GRID, rate)
        elbo = curves.at("InfoTok-Flex global_elbo", rate)
        curves.points.setdefault("oracle (per-clip search)", []).append(
            {
                "method": "oracle (per-clip search)",
                "rate": rate,
                "realized_rate": float(np.mean(picks)),
                "bpp16": float(np.mean(picks)) + MASK_BPP16,
                "psnr": mean_psnr,
                "clip_rates": {c.name: r for c, r in zip(clips, picks)},
                "global_elbo_psnr": elbo["psnr"],
                "videos": len(clips),
            }
        )
        log(f"oracle rate {rate:g}: PSNR {mean_psnr:.2f} vs global_elbo {elbo['psnr']:.2f}")


def whole_frame_router(setup: Setup, model: InfoTok, rate: float = 0.5) -> dict:
    """The router on whole frames (short side resized, no centre crop), where borders stay in view:
    per clip its score, global_elbo rate, PSNR at static and at that rate, and the oracle's rate."""
    clips = setup.clips(model, crop=False)
    rates = clip_rates(model, "global_elbo", rate, clips)
    grid = psnr_grid(model, clips, ORACLE_GRID)
    picks, oracle_psnr = oracle_rates(grid, ORACLE_GRID, rate)
    static_column = ORACLE_GRID.index(rate)  # static `rate` is a point of the oracle's grid
    per_clip = {
        c.name: {
            "score": c.score,
            "rate": r,
            "size": list(c.frames.shape[1:3]),
            "motion": motion(c.frames),
            "psnr_static": float(row[static_column]),
            "psnr_global_elbo": measure(model, c, r, quality=False)["psnr"],
            "oracle_rate": pick,
        }
        for c, r, row, pick in zip(clips, rates, grid, picks)
    }
    return {"rate": rate, "clips": per_clip, "oracle_psnr": oracle_psnr}


def elastic_style(setup: Setup, model: InfoTok, curves: Curves) -> float:
    """The ElasticTok-style peer at fixed rates (tail dropping), then ElasticTok's binary search over
    prefix lengths for an MSE threshold. Returns the mean number of decoder passes the search spent."""
    clips = setup.clips(model)
    for rate in RATES:
        curves.add(
            "ElasticTok-style (tail drop)",
            rate,
            [measure(model, c, rate, "order", **setup.quality_kwargs(rate)) for c in clips],
            clips,
        )
    all_passes = []
    for threshold in SEARCH_THRESHOLDS:
        rows = []
        for c in clips:

            def mse_at(k, c=c):
                recon = decode_clip(model, clip_at(model, c, k / 16, "order"))
                return float(np.mean(((recon.astype(np.float64) - c.frames) / 127.5) ** 2))

            t0 = time.time()
            k, passes = binary_search_rate(mse_at, 16, threshold)
            seconds = time.time() - t0
            all_passes.append(passes)
            rows.append(measure(model, c, k / 16, "order") | {"search_passes": passes, "search_seconds": seconds})
        curves.add(
            "ElasticTok-style binary search",
            threshold,
            rows,
            clips,
            extra={
                "threshold": threshold,
                "nfe": 1 + float(np.mean([r["search_passes"] for r in rows])) + 1,
                "seconds_per_clip": float(np.mean([r["search_seconds"] for r in rows])),
            },
        )
    return float(np.mean(all_passes))


# ------------------------------------------------------------------------- speed and memory
CHILD = (
    "import sys, time; from infotok.cli import main; t = time.time(); rc = main(sys.argv[1:]); "
    "hwm = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')); "
    "print('RESULT', rc, time.time() - t, hwm, file=sys.stderr)"
)


def run_measured(argv: list[str], child: str = CHILD) -> tuple[float, float]:
    """Run `infotok ARGV` (or another `child` program printing the same RESULT line) in a fresh
    process: (seconds, its own peak resident memory in MiB).

    The peak is the child's VmHWM from /proc, which starts afresh at exec (ru_maxrss would carry
    this benchmark process's peak into the child)."""
    done = subprocess.run(
        [sys.executable, "-c", child, *argv],
        capture_output=True,
        text=True,
        timeout=3000,
        cwd=Path(__file__).resolve().parents[1],
    )  # the child imports `benchmarks`
    line = next((row for row in done.stderr.splitlines() if row.startswith("RESULT")), None)
    if line is None or line.split()[1] != "0":
        raise RuntimeError(f"{' '.join(argv[:1])} failed: {done.stderr[-500:]}")
    _, _, seconds, hwm_kib = line.split()
    return float(seconds), int(hwm_kib) / 1024


RELEASE_CHILD = (
    "import sys, time; from benchmarks.experiments import release_window; t = time.time(); "
    "release_window(*sys.argv[1:]); "
    "hwm = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')); "
    "print('RESULT', 0, time.time() - t, hwm, file=sys.stderr)"
)
# `full`: the release's InfoTok-Flex; `tiny`: the same structure with small widths (for tests)
RELEASE_SIZES = {
    "full": ({}, {}),
    "tiny": (
        {"channels": 8, "z_channels": 16},
        {"width": 16, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "mlp_hidden": 32},
    ),
}


def release_model(which: str = "full") -> InfoTok:
    """The release's architecture with random weights (dropped tokens as the all-zero code)."""
    from infotok.cosmos import CosmosConfig, ReleaseCompressorConfig

    base, stacks = RELEASE_SIZES[which]
    return InfoTok(CosmosConfig(**base), ReleaseCompressorConfig(**stacks), score_mean=1.0, dropped="zero_code")


def release_window(step: str, which: str, size: str, frames: str) -> None:
    """One window through the release's architecture: `encode` (with the router's decoder pass,
    rate 0.5) or `decode` (the tokens of one)."""
    size, frames = int(size), int(frames)
    torch.manual_seed(0)
    model = release_model(which).eval()
    x = torch.rand(1, 3, frames, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    if step == "encode":
        model.encode(x, 0.5, "static")
    else:
        t, h, w = model.geometry.latent_shape(frames, size, size)
        mask = torch.rand(1, t, h, w, generator=torch.Generator().manual_seed(1)) < 0.5
        indices = torch.randint(0, 64000, (1, t, h, w), generator=torch.Generator().manual_seed(2)) * mask
        model.decode(
            TokenBatch(
                indices,
                mask,
                torch.tensor([0.5], dtype=torch.float64),
                torch.tensor([0.0], dtype=torch.float64),
                frames,
                size,
                size,
            )
        )


def release_speed(which: str, size: int, frames: int) -> dict:
    """Seconds and peak memory of the release architecture, each step in a fresh process (model
    construction included: a few seconds of the total)."""
    with torch.device("meta"):
        out = {"which": which, "parameters": sum(p.numel() for p in release_model(which).parameters())}
    for step in ("encode", "decode"):
        seconds, peak = run_measured([step, which, str(size), str(frames)], RELEASE_CHILD)
        out[step] = {"seconds": seconds, "peak_rss_mib": peak}
        log(f"release architecture ({which}) {step}: {seconds:.1f} s, {peak:.0f} MiB")
    return out


def core_scaling(model: InfoTok, frames: int) -> dict:
    """`model.encode` on one window at 455x256 and at 1280x720, as `infotok encode` runs by default
    (the checkpoint's default strategy, selection and fill) and with `global_elbo` (the router's
    decoder pass): seconds and microseconds per pixel; and at 455x256 the same weights with
    whole-frame attention (the compressor before tiling), the cost this replaced."""
    from dataclasses import replace

    def seconds(m: InfoTok, width: int, height: int, **kwargs) -> float:
        x = torch.rand(1, 3, frames, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
        m.encode(x[:, :, :5, :64, :64], 0.5, **kwargs)  # warm-up
        t = time.perf_counter()
        m.encode(x, 0.5, **kwargs)
        return time.perf_counter() - t

    out = {"default": "/".join(model.choices())}
    for label, kwargs in (("", {}), (", global_elbo", {"strategy": "global_elbo"})):
        for size, (w, h) in (("455x256", (456, 256)), ("1280x720", (1280, 720))):
            s = seconds(model, w, h, **kwargs)
            out[size + label] = {"seconds": s, "us_per_pixel": s / (frames * w * h) * 1e6}
            log(f"encode one {frames}x{size} window{label}: {s:.1f} s")
    if getattr(model.compressor_config, "window", 0):
        whole = InfoTok(
            model.base.config,
            replace(model.compressor_config, window=0),
            float(model.score_mean),
            model.name,
            model.dropped_mode,
            model.predictor_config,
            model.default_fill,
            held=model.held is not None,
        )
        whole.load_state_dict(model.state_dict())
        s = seconds(whole.eval(), 456, 256, strategy="global_elbo")
        out["455x256 whole-frame attention, global_elbo"] = {
            "seconds": s,
            "us_per_pixel": s / (frames * 456 * 256) * 1e6,
        }
    return out


def cli_encode_720p(video: Path, frames: int, checkpoint: str) -> dict:
    """`infotok encode --size 720` of `frames` frames in a fresh process, with the checkpoint's
    defaults and with `--strategy global_elbo`: seconds and the process's own peak memory."""
    out = {"frames": frames}
    with tempfile.TemporaryDirectory() as d:
        clip = Path(d, "clip.mp4")
        write_video(clip, iter_frames(video, max_frames=frames), fps=probe(video).fps)
        for label, extra in (("default", []), ("global_elbo", ["--strategy", "global_elbo"])):
            seconds, peak = run_measured(
                [
                    "encode",
                    str(clip),
                    "-o",
                    f"{d}/t.itok",
                    "--size",
                    "720",
                    "--rate",
                    "0.5",
                    "--checkpoint",
                    checkpoint,
                    "--overwrite",
                    *extra,
                ]
            )
            out[label] = {"seconds": seconds, "peak_rss_mib": peak}
    return out


def token_refusal_seconds(model: InfoTok, repeats: int = 20) -> dict:
    """How long the `.itok` parser takes to refuse files with forged length fields (the tests check
    that it allocates nothing for them; how fast is measured here)."""
    import struct

    from infotok.tokens import TokenFormatError, TokenReader
    from infotok.video import synthetic_video

    with tempfile.TemporaryDirectory() as d:
        data = bytearray(
            model.tokenize(synthetic_video(21, 48, 64, seed=1), 0.5, "static", window=9, overlap=2)
            .save(Path(d, "t.itok"))
            .read_bytes()
        )
    header_length = struct.unpack_from("<I", data, 6)[0]
    forged = {
        "header length 2^31": bytes(data[:6]) + struct.pack("<I", 2**31) + bytes(data[10:]),
        "record length 2^32-16": bytes(data[: 14 + header_length])
        + struct.pack("<I", 0xFFFFFFF0)
        + bytes(data[18 + header_length :]),
    }
    out = {}
    for name, blob in forged.items():
        t0 = time.perf_counter()
        for _ in range(repeats):
            try:
                with TokenReader(blob) as reader:
                    list(reader)
            except TokenFormatError:
                pass
        out[name] = (time.perf_counter() - t0) / repeats
    return out


def cli_resources(video: Path, frames: int, size: int, checkpoint: str) -> dict:
    """Encode, decode and viz of the first `frames` frames of `video` through the CLI, each in a fresh process."""
    out = {}
    with tempfile.TemporaryDirectory() as d:
        clip = Path(d, "clip.mp4")
        write_video(clip, iter_frames(video, max_frames=frames), fps=probe(video).fps)
        tokenize = ["--size", str(size), "--rate", "0.5", "--checkpoint", checkpoint]
        for step, argv in (
            ("encode", ["encode", str(clip), "-o", f"{d}/t.itok", *tokenize]),
            ("decode", ["decode", f"{d}/t.itok", "-o", f"{d}/out.mp4", "--checkpoint", checkpoint]),
            ("viz", ["viz", str(clip), "-o", f"{d}/viz.mp4", *tokenize]),
        ):
            seconds, peak = run_measured(argv)
            out[step] = {"seconds": seconds, "frames_per_s": frames / seconds, "peak_rss_mib": peak}
        out["file_bytes"] = Path(d, "t.itok").stat().st_size
    return out


def throughput(model: InfoTok, size: int, frames: int, repeats: int = 3) -> dict:
    """Model-only encode (`static` 0.5, the checkpoint's default selection and fill) and decode
    frames/s on one window, after a warm-up."""
    x = torch.rand(1, 3, frames, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    model.encode(x, 0.5, "static")
    t = time.time()
    for _ in range(repeats):
        batch = model.encode(x, 0.5, "static")
    out = {"encode_frames_per_s": repeats * frames / (time.time() - t)}
    t = time.time()
    for _ in range(repeats):
        model.decode(batch)
    out["decode_frames_per_s"] = repeats * frames / (time.time() - t)
    return out


def batch_throughput(model: InfoTok, size: int, frames: int, batches: tuple[int, ...] = (1, 4, 8)) -> dict:
    """`model.encode` (`static` 0.5, the checkpoint's default selection and fill) frames/s on one
    process at several batch sizes."""
    out = {}
    for b in batches:
        x = torch.rand(b, 3, frames, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
        model.encode(x[:1], 0.5, "static")  # warm-up
        t = time.time()
        model.encode(x, 0.5, "static")
        out[str(b)] = b * frames / (time.time() - t)
    return out


def dataset_throughput(videos: list[Path], checkpoint: str, size: int, workers: tuple[int, ...] = (1, 2)) -> dict:
    """`infotok encode-dataset` on Ray Data over the evaluation clips with 1 and 2 model workers."""
    from infotok.dataset import measure_throughput

    out = {}
    for w in workers:
        out[str(w)] = measure_throughput(videos, checkpoint, w, max_size=size, rate=0.5)
        log(f"encode-dataset with {w} worker(s): {out[str(w)]['frames_per_s']:.1f} frames/s")
    return out


def checkpoint_facts(model: InfoTok, directory: str) -> dict:
    """What the report may say about a checkpoint: read from its own config, not remembered."""
    import json

    config = json.loads(Path(directory, "config.json").read_text())
    return {
        "path": str(directory),
        "name": model.name,
        "adaptive": model.adaptive,
        "trained_steps": config.get("trained_steps"),
        "score_mean": float(model.score_mean),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
