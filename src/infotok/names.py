"""The names a tokenization chooses among, importable without torch (so `infotok --help` is quick).

Each module that implements a choice checks against its tuple here: `router` the strategies,
`selection` the selections, `fill` the fills.
"""

# Each name is one registered class (`rate_policies.RATE_POLICIES`, `selection.RANKINGS`). The peers
# (`uniform`; `order`, `temporal`, `random`) stay registered in the package, not only in the
# benchmarks: `infotok train --train-selection order` re-trains the ElasticTok-style checkpoint, training
# mixes `random` masks in, and files that name them must keep decoding and re-encoding alike.
STRATEGIES = ("global_elbo", "static", "uniform", "rd")
SELECTIONS = ("error", "order", "random", "temporal", "value", "drift")
FILLS = ("mask", "hold")

# `--preset`: named choices of (strategy, selection, fill); an option given explicitly wins over its
# preset. `default` is the checkpoint's own (the shipped one: rd + drift + hold); `paper` is InfoTok's
# published configuration; `fixed` gives every window exactly the asked rate.
PRESETS = {
    "default": {},
    "paper": {"strategy": "global_elbo", "selection": "error", "fill": "mask"},
    "fixed": {"strategy": "static"},
}
