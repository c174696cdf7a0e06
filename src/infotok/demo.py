"""`infotok demo`: the built-in procedural sample tokenized at a few rates, with everything a first
look needs (reconstructions, side-by-side visualizations, PNG strips, a JSON report)."""

from __future__ import annotations

import json
from pathlib import Path

from .metrics import psnr
from .video import synthetic_video, write_video
from .viz import layout, prefix_panels, render, strip

SAMPLE_FPS = 24.0


def run_demo(
    model,
    out: str | Path,
    rates: list[float],
    frames: int = 33,
    height: int = 128,
    width: int = 192,
    seed: int = 0,
    on_rate=None,
    one_d=None,
) -> dict:
    """Writes into `out` and returns the report (also saved as report.json); with `one_d` (an
    `InfoTok1D`), also the 1D layout's prefixes (`prefixes_1d`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    video = synthetic_video(frames, height, width, seed=seed)
    write_video(out / "sample.mp4", video, fps=SAMPLE_FPS)
    report = {"checkpoint": model.name, "sample": {"frames": frames, "size": f"{width}x{height}"}, "runs": []}
    for rate in rates if model.drops_tokens(model.default_fill) else [1.0]:
        tokens = model.tokenize(video, rate=rate, strategy="static", window=frames, overlap=0, fps=SAMPLE_FPS)
        tag = f"rate{rate:g}"
        tokens.save(out / f"sample_{tag}.itok", overwrite=True)
        recon = model.detokenize(tokens)
        write_video(out / f"reconstruction_{tag}.mp4", recon, fps=SAMPLE_FPS)
        panels = list(render(video, recon, tokens))
        write_video(out / f"viz_{tag}.mp4", panels, fps=SAMPLE_FPS)
        strip(
            panels,
            out / f"viz_{tag}.png",
            header=layout(height).header,
            title=f"built-in sample, rate {rate:g}: original | reconstruction | kept tokens",
        )
        run = {"rate": rate, "psnr": psnr(video, recon)}
        run |= tokens.ledger(file_bytes=(out / f"sample_{tag}.itok").stat().st_size).to_dict()
        report["runs"].append(run)
        if on_rate:
            on_rate(run)
    if one_d is not None:
        report["1d"] = prefixes_1d(one_d, video, out)
        if on_rate:
            on_rate({"1d": report["1d"]})
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def prefixes_1d(model, video, out: Path, prefixes: tuple[int, ...] = (16, 64, 256)) -> dict:
    """The 1D layout's extra output: the sample encoded once, decoded from each window's first 16, 64 and
    256 tokens, side by side with the source (prefixes_1d.mp4 / .png)."""
    tokens, psnrs = prefix_panels(model, video, SAMPLE_FPS, out / "prefixes_1d.mp4", out / "prefixes_1d.png", prefixes)
    tokens.save(out / "sample_1d.itok", overwrite=True)
    return {"checkpoint": model.name, "tokens_per_window": tokens.windows[0].kept, "psnr_by_prefix": psnrs}
