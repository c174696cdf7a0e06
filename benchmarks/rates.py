"""How far the realized rate strays from `--rate`: `python -m benchmarks.rates`.

Every evaluation clip is tokenized whole, as `infotok encode CLIP --rate R` does with the defaults
(`rd` + `drift` + `hold`, each window at the drift threshold calibrated on the training clips, short
sides over 256 shrunk to 256), and again with `--budget run` (one exact budget over all the clips).
Prints each asked rate's realized rates: per clip (mean, least, most), over all tokens, and on the
longest clip alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .experiments import list_clips, log

RATES = [0.5, 0.25, 0.125]
MAX_SIZE = 256  # the CLI's default for sources with a larger short side


def realized(model, video: Path, rate: float, rates: list[float] | None = None) -> tuple[int, int]:
    """(kept, total) tokens of one clip tokenized whole with the defaults."""
    kept = total = 0
    for w in model.iter_tokenize(video, rate=rate, max_size=MAX_SIZE, rates=rates):
        kept, total = kept + w.kept, total + w.num_tokens
    return kept, total


def main(argv: list[str] | None = None) -> int:
    from infotok.model import InfoTok
    from infotok.pipeline import run_budget_rates
    from infotok.spec import TokenizeSpec, Windowing
    from infotok.video import probe

    p = argparse.ArgumentParser(prog="python -m benchmarks.rates", description=__doc__.split("\n")[0])
    p.add_argument("--videos", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"))
    p.add_argument("--out", default="bench_out/rates.json")
    args = p.parse_args(argv)
    model = InfoTok.from_pretrained()
    videos = list_clips(args.videos)
    longest = max(videos, key=lambda v: probe(v).num_frames)
    rows = []
    for rate in RATES:
        log(f"rate {rate}: calibrated")
        calibrated = {v.name: realized(model, v, rate) for v in videos}
        log(f"rate {rate}: --budget run")
        shared = run_budget_rates(model, videos, TokenizeSpec(rate), Windowing(max_size=MAX_SIZE))
        run = {v.name: realized(model, v, rate, r) for v, r in zip(videos, shared)}
        per_clip = [k / n for k, n in calibrated.values()]
        rows.append(
            {
                "asked": rate,
                "per_clip": {name: k / n for name, (k, n) in calibrated.items()},
                "mean": float(np.mean(per_clip)),
                "least": min(per_clip),
                "most": max(per_clip),
                "all_tokens": sum(k for k, _ in calibrated.values()) / sum(n for _, n in calibrated.values()),
                "longest": calibrated[longest.name][0] / calibrated[longest.name][1],
                "run_all_tokens": sum(k for k, _ in run.values()) / sum(n for _, n in run.values()),
                "run_per_clip": {name: k / n for name, (k, n) in run.items()},
            }
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"clips": [v.name for v in videos], "longest": longest.name, "rows": rows}, indent=2)
    )
    print(
        f"{len(videos)} clips, each tokenized whole with the defaults; longest: {longest.name} "
        f"({probe(longest).num_frames} frames)"
    )
    print(
        "| asked | calibrated: per clip, mean (least - most) | calibrated: all tokens | calibrated: longest clip "
        "| `--budget run`: all tokens (per clip least - most) |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        run = list(r["run_per_clip"].values())
        print(
            f"| {r['asked']:g} | {r['mean']:.3f} ({r['least']:.3f} - {r['most']:.3f}) | {r['all_tokens']:.3f} "
            f"| {r['longest']:.3f} | {r['run_all_tokens']:.4f} ({min(run):.3f} - {max(run):.3f}) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
