"""Reading and writing video and token files: variable frame rates, output modes, odd sizes, paths."""
import os
from contextlib import contextmanager

import numpy as np
import pytest

from infotok.tokens import TokenHeader, Tokens, TokenWindow, TokenWriter, check_token_output


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def tiny_tokens() -> Tokens:
    """5 frames of 16x16 in one window, every token kept: no model needed."""
    header = TokenHeader(model="m", model_hash="0", config_hash="0", levels=[8, 8, 8, 5, 5, 5], temporal_factor=4,
                         spatial_factor=8, width=16, height=16, source_width=16, source_height=16, fps=8.0,
                         num_frames=5, window=5, overlap=0, strategy="static", selection="error", avg_rate=1.0,
                         score_mean=0.0)
    mask = np.ones((2, 2, 2), bool)
    return Tokens(header, [TokenWindow(0, 5, 1.0, 0.0, mask, np.arange(8, dtype=np.uint16))])


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, mask, mode):
    with umask(mask):
        tokens = tiny_tokens().save(tmp_path / "t.itok")
        (tmp_path / "plain").write_text("x")
    assert (tmp_path / "plain").stat().st_mode & 0o777 == mode  # what open() gives
    assert tokens.stat().st_mode & 0o777 == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "t.itok"]  # no temporary files


def test_check_token_output(tmp_path):
    (tmp_path / "folder").mkdir()
    assert check_token_output(tmp_path / "a" / "t.ITOK") == tmp_path / "a" / "t.ITOK"
    for path, message in {tmp_path / "folder": "is an existing folder",
                          str(tmp_path / "newdir") + os.sep: "ends with a separator",
                          tmp_path / "t.mp4": "token files must end in .itok",
                          tmp_path / "t": "token files must end in .itok"}.items():
        with pytest.raises(ValueError, match=message):
            check_token_output(path)
        with pytest.raises(ValueError, match=message):
            TokenWriter(path, tiny_tokens().header, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_tokens_save_refuses_to_overwrite_unless_asked(tmp_path):
    tokens = tiny_tokens()
    path = tokens.save(tmp_path / "t.itok")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True") as error:
        tokens.save(path)
    assert str(path) in str(error.value) and path.read_bytes() == before
    tokens.header.fps = 4.0
    assert Tokens.load(tokens.save(path, overwrite=True)).header.fps == 4.0
