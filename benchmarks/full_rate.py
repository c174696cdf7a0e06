"""`python -m benchmarks.full_rate`: where InfoTok-Flex loses at rate 1 against the fixed-rate base (issue #32).

On the evaluation clips (first 33 frames, short side 256, centre crop 256x256), three full-rate decodes:
InfoTok-Flex through its compressor and decompressor (what rate 1 gives), InfoTok-Flex's own base alone
(its encoder, FSQ and decoder, the stacks bypassed), and the fixed-rate base `checkpoints/base` (`--base`).
Prints PSNR per clip and the means. InfoTok-Flex was fine-tuned from that base's stage-1 weights (the folder at
commit e9ad0bf, 25.84 dB): against them, the gap between the last two is what fine-tuning the base jointly with the
stacks cost; today's folder has a second and a third training stage on top (checkpoints/base/TRAINING.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from infotok.metrics import psnr
from infotok.model import InfoTok
from infotok.video import from_model, read_video, resize_and_crop, to_model

from .experiments import list_clips

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def base_alone(model: InfoTok, x: torch.Tensor) -> torch.Tensor:
    codes, _ = model.base.quantize(model.base.encode_features(x))
    return model.base.decode_features(model.base.features_from_codes(codes))


@torch.no_grad()
def through_stacks(model: InfoTok, x: torch.Tensor) -> torch.Tensor:
    return model.decode_codes(model.encode_codes(x)[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=Path, default=ROOT.parent / "shared" / "data" / "videos")
    p.add_argument("--base", type=Path, default=ROOT / "checkpoints" / "base")
    args = p.parse_args(argv)
    flex, base = InfoTok.from_pretrained(), InfoTok.from_pretrained(args.base)
    decodes = {
        "InfoTok-Flex, rate 1": lambda x: through_stacks(flex, x),
        "its base alone": lambda x: base_alone(flex, x),
        "checkpoints/base": lambda x: base_alone(base, x),
    }
    rows = []
    for video in list_clips(args.videos):
        frames = resize_and_crop(read_video(video, max_frames=33)[0], 256)
        x = to_model(torch.from_numpy(frames[None]))
        rows.append([psnr(frames, from_model(f(x).clamp(-1, 1)[0])[: len(frames)]) for f in decodes.values()])
        print(f"{video.name:32s}" + "".join(f"{v:9.2f}" for v in rows[-1]))
    print(f"{'mean PSNR dB':32s}" + "".join(f"{v:9.2f}" for v in np.mean(rows, axis=0)), "|", " | ".join(decodes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
