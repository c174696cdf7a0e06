"""`infotok train` for tests/test_distributed.py, run by `accelerate launch` (or plain python).

Each process writes <out>/rank<i>.json at the end: the step, the process count and SHA-256 hashes
of its live parameters and of its EMA. With `--kill-at N` as the first arguments, every process
SIGKILLs itself right after step N (no collective operation runs between a step's loss reduction
and that moment, so the processes die at the same step, as after a node failure).
"""

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

from infotok import train
from infotok.cli import main


def digest(tensors) -> str:
    return hashlib.sha256(b"".join(t.detach().float().cpu().numpy().tobytes() for t in tensors)).hexdigest()


def hooked(run, kill_at):
    def wrapper(self, on_step=None):
        def step(n, loss):
            if n == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        run(self, on_step=step)
        acc = self.accelerator
        model = acc.unwrap_model(self.model)
        Path(self.cfg.out, f"rank{acc.process_index}.json").write_text(
            json.dumps(
                {
                    "step": self.step,
                    "processes": acc.num_processes,
                    "params": digest(model.parameters()),
                    "ema": digest(self.ema.shadow),
                }
            )
        )

    return wrapper


if __name__ == "__main__":
    args = sys.argv[1:]
    kill_at = int(args[1]) if args[:1] == ["--kill-at"] else None
    train.Trainer.run = hooked(train.Trainer.run, kill_at)
    sys.exit(main(args[2:] if kill_at is not None else args))
