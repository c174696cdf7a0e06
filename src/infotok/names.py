"""The names a tokenization chooses among, importable without torch (so `infotok --help` is quick).

Each module that implements a choice checks against its tuple here: `router` the strategies,
`selection` the selections, `fill` the fills.
"""

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
