"""Convert a prior folder of format `infotok-prior` (one network of residual blocks run each pass) to format 2
(`infotok-prior-2`): the same network is a trunk of no blocks and pass blocks of the old dilations, so the
integer weights are renamed (`a{i}` -> `pass_a{i}`, `b{i}` -> `pass_b{i}`), not changed, and code the same bytes.

    python scripts/convert_prior_v1.py OLD_FOLDER NEW_FOLDER
"""

import json
import re
import sys
from pathlib import Path

from safetensors.torch import load_file

from infotok.prior import PRIOR_CONFIG, PRIOR_FILE, PriorConfig, TokenPrior


def convert(old: Path, new: Path) -> TokenPrior:
    info = json.loads((old / PRIOR_CONFIG).read_text())
    if info.get("format") != "infotok-prior":
        raise SystemExit(f"{old}: not a format-1 prior folder")
    config = dict(info.pop("prior"))
    config["pass_dilations"], config["dilations"] = config.pop("dilations"), []
    weights = {re.sub(r"\.([ab]\d+)$", r".pass_\1", k): v for k, v in load_file(str(old / PRIOR_FILE)).items()}
    info |= {"converted_from": {"format": info.pop("format"), "hash": info.pop("hash")}}
    prior = TokenPrior(PriorConfig.from_dict(config), weights, info)
    prior.save_pretrained(new)
    return prior


if __name__ == "__main__":
    print(convert(Path(sys.argv[1]), Path(sys.argv[2])).hash)
