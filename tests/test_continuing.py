"""Continuing windows: under `hold`, a window starts from the codes the one before showed at its last latent
frame, every `refresh`-th starts afresh, and any segment still decodes as the whole video does there."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infotok.cli import main
from infotok.eval import calibrate, continuing_rates, load_chains
from infotok.fill import Carry, carry_after, drift, hold_last_kept
from infotok.model import InfoTok
from infotok.prior import PriorConfig, PriorNet, TokenPrior
from infotok.router import hold_rates
from infotok.spec import DEFAULT_REFRESH, TokenizeSpec
from infotok.tokens import FORMAT_VERSION, TokenHeader, Tokens, check_header
from infotok.video import from_model, synthetic_video, write_video
from tests.conftest import tiny_model

STILL = np.repeat(synthetic_video(1, 32, 32, seed=2), 41, axis=0)  # five windows of 9 frames overlapping by 1
MOVING = synthetic_video(41, 32, 32, seed=4)
HOLD = dict(fill="hold", selection="drift", window=9)


@pytest.fixture(scope="module")
def model():
    return tiny_model(predictor=True)  # hold thresholds calibrated on its own codes


def test_a_carried_code_that_does_not_drift_costs_nothing_and_one_that_drifts_is_kept():
    codes = torch.zeros(1, 1, 3, 1, 2)  # two positions, still over three latent frames
    carried, present = torch.tensor([[[[0.0, 0.5]]]]), torch.ones(1, 1, 2, dtype=torch.bool)
    assert drift(codes, 0.1)[0, 0, 0].tolist() == [float("inf")] * 2  # a fresh window keeps its first frame
    assert drift(codes, 0.1, carried, present)[0, 0, 0].tolist() == [0.0, 0.5]
    assert hold_rates(codes, 0.1, carried, present) == [pytest.approx(1 / 6)]  # the drifted one alone
    assert hold_rates(codes, 0.1, torch.zeros(1, 1, 1, 2), present) == [pytest.approx(1 / 6)]  # floor: one token


def test_the_carry_is_what_hold_shows_at_the_last_latent_frame_and_decodes_as_kept():
    indices = torch.tensor([[[[1, 2]], [[3, 0]], [[0, 0]]]])  # [1, t=3, h=1, w=2]
    mask = torch.tensor([[[[False, True]], [[True, False]], [[False, False]]]])
    before = Carry(torch.tensor([[[7, 8]]]), torch.tensor([[[True, True]]]))
    into_indices, into_mask = before.into(indices, mask)
    assert into_indices[0, 0, 0].tolist() == [7, 2] and bool(into_mask[0, 0].all())  # kept code 2 wins
    after = carry_after(indices, mask, before)
    assert after.indices[0, 0].tolist() == [3, 2] and bool(after.present.all())
    fresh = carry_after(indices, mask)
    assert fresh.indices[0, 0].tolist() == [3, 2] and fresh.present[0, 0].tolist() == [True, True]
    held, _ = hold_last_kept(into_indices[:, None], into_mask)
    assert torch.equal(held[:, 0, -1], after.indices)


def test_a_still_video_costs_about_its_first_window_and_decodes_the_same(model):
    independent = model.tokenize(STILL, rate=0.5, refresh=1, **HOLD)
    continuing = model.tokenize(STILL, rate=0.5, refresh=DEFAULT_REFRESH, **HOLD)
    first = continuing.windows[0].kept
    assert len(continuing.windows) == 5 and [w.kept for w in independent.windows] == [first] * 5
    assert all(w.kept < first / 4 for w in continuing.windows[1:])
    assert continuing.header.refresh == DEFAULT_REFRESH and independent.header.refresh == 1
    a, b = model.detokenize(independent).astype(float), model.detokenize(continuing).astype(float)
    assert np.abs(a - b).mean() < 2  # out of 255


def test_every_refresh_th_window_starts_afresh(model):
    tokens = model.tokenize(STILL, rate=0.5, refresh=3, **HOLD)
    kept = [w.kept for w in tokens.windows]
    assert kept[3] == kept[0] and max(kept[1], kept[2], kept[4]) < kept[0] / 4
    assert [tokens.header.continues(i) for i in range(5)] == [False, True, True, False, True]


def test_continuing_files_round_trip_and_any_segment_decodes_from_its_window_alone(model, tmp_path, monkeypatch):
    tokens = model.tokenize(MOVING, rate=0.5, refresh=4, **HOLD)
    path = tokens.save(tmp_path / "v.itok")
    loaded = Tokens.load(path)
    assert loaded.header.format_version == 3 and loaded.header.refresh == 4
    whole = model.detokenize(loaded)
    decode, calls = model.decode, []
    monkeypatch.setattr(model, "decode", lambda batch: calls.append(1) or decode(batch))
    for start, stop in [(20, 24), (26, 28), (36, 41), (12, 30)]:
        calls.clear()
        assert np.array_equal(model.detokenize(loaded, start, stop), whole[start:stop]), (start, stop)
        assert len(calls) == sum(1 for w in loaded.windows if w.end > start and w.start < stop)
    monkeypatch.undo()
    window = loaded.windows[3]  # continues windows 0-2: Tokens.batch carries it in
    alone = from_model(model.decode(loaded.batch(3)))
    assert loaded.batch(3).carry is not None and loaded.batch(4).carry is None
    assert torch.equal(loaded.batch(-2).indices, loaded.batch(3).indices)
    # frames no neighbour shares come from this window alone, as in the whole decode
    assert np.array_equal(alone[1:-1], whole[window.start + 1 : window.end - 1])


def test_continuing_needs_hold_and_drift_and_the_default_follows_the_fill(model):
    assert TokenizeSpec(fill="hold", selection="drift").resolved(model).refresh == DEFAULT_REFRESH
    assert TokenizeSpec(fill="mask", selection="value").resolved(model).refresh == 1
    assert TokenizeSpec(fill="hold", selection="drift", rates=(0.5,)).resolved(model).refresh == 1
    with pytest.raises(ValueError, match="needs the hold fill and drift selection"):
        TokenizeSpec(fill="hold", selection="error", refresh=2).resolved(model)
    with pytest.raises(ValueError, match="refresh must be a positive"):
        TokenizeSpec(refresh=0)
    batch = model.encode(STILL[None, :9], 0.5, "rd", "drift", fill="hold")
    with pytest.raises(ValueError, match="continuing windows need the hold fill"):
        model.encode(STILL[None, :9], 0.5, "static", "error", fill="hold", carry=batch.carry_after())


def test_a_header_says_whether_its_windows_continue(model):
    header = model.tokenize(STILL[:9], rate=0.5, refresh=1, **HOLD).header
    assert header.format_version == FORMAT_VERSION
    for bad, match in [
        (dict(refresh=0), "refresh must be a positive"),
        (dict(refresh=2, fill="mask"), "only grid windows under the hold fill"),
        (dict(refresh=2, format_version=1), "format version 3"),
    ]:
        forged = TokenHeader(**{**header.__dict__, **bad})
        forged.format_version = bad.get("format_version", forged.format_version)
        with pytest.raises(ValueError, match=match):
            check_header(forged)


def test_encode_takes_refresh_and_info_and_the_summary_say_it(tmp_path, capsys, model):
    checkpoint = model.save_pretrained(tmp_path / "tiny", extra={"fill": "hold"})
    write_video(tmp_path / "v.mp4", STILL, fps=9, lossless=True)
    argv = ["--checkpoint", str(checkpoint), "--overwrite", "--window", "9"]
    assert main(["encode", str(tmp_path / "v.mp4"), "-o", str(tmp_path / "c.itok"), "--refresh", "3", *argv]) == 0
    assert "(continuing, refresh 3)" in capsys.readouterr().out
    assert main(["encode", str(tmp_path / "v.mp4"), "-o", str(tmp_path / "i.itok"), "--refresh", "1", *argv]) == 0
    assert b'"refresh"' not in (tmp_path / "i.itok").read_bytes()  # independent files stay version 1
    assert main(["info", str(tmp_path / "c.itok")]) == 0
    assert "refresh: 3" in capsys.readouterr().out
    for continuing in (False, True):  # --entropy prior: windows continue under a prior that models it
        net = PriorNet(PriorConfig(levels=list(model.base.levels), channels=8, continuing=continuing))
        prior = TokenPrior.from_net(net).save_pretrained(tmp_path / f"prior-{continuing}")
        out = tmp_path / f"p-{continuing}.itok"
        assert (
            main(
                ["encode", str(tmp_path / "v.mp4"), "-o", str(out), "--entropy", "prior", "--prior", str(prior), *argv]
            )
            == 0
        )
        assert Tokens.load(out, TokenPrior.from_pretrained(prior)).header.refresh == (
            DEFAULT_REFRESH if continuing else 1
        )
    bad = ["encode-dataset", str(tmp_path / "v.mp4"), "--out", str(tmp_path / "ds"), "--refresh", "2", *argv]
    assert main(bad) != 0
    assert "decodes alone (refresh 1)" in capsys.readouterr().err


def test_a_slice_of_continuing_windows_decodes_alone_as_the_whole_video_does_there(model, tmp_path):
    tokens = model.tokenize(MOVING, rate=0.5, refresh=4, **HOLD)  # windows 1-3 continue, 4 starts afresh
    whole = model.detokenize(tokens)
    part = Tokens.load(tokens[2:5].save(tmp_path / "part.itok"))
    first = tokens.windows[2]
    assert part.header.num_frames == tokens.windows[4].end - first.start and part.windows[0].start == 0
    assert part.windows[0].mask[0].all() and not tokens.windows[2].mask[0].all()  # given what it continued from
    assert np.array_equal(model.detokenize(part)[1:], whole[first.start + 1 :])  # frame 0 was blended with window 1
    assert np.array_equal(model.detokenize(tokens[4:])[1:], whole[tokens.windows[4].start + 1 :])
    with pytest.raises(TypeError, match="slice Tokens by windows"):
        tokens[2]
    with pytest.raises(ValueError, match="hold no window"):
        tokens[3:3]
    # at a static rate under 1/9 a fresh window keeps part of its first latent frame
    static = model.tokenize(MOVING, rate=0.07, strategy="static", refresh=2, **HOLD)
    with pytest.raises(ValueError, match="only start at a multiple of the refresh"):
        static[1:4]


def test_the_windows_of_a_chain_are_rated_at_the_chains_thresholds_and_a_window_alone_at_the_clips(model, tmp_path):
    fresh = model.calibration.rd_thresholds
    every_drift = [[r, 0.0 if r < 1 else -1.0] for r, _ in fresh]  # keeps every token that drifts
    kept = lambda video, **kw: [w.kept for w in model.tokenize(video, rate=0.25, **HOLD, **kw).windows]  # noqa: E731
    before = [kept(MOVING), kept(MOVING[:9]), kept(MOVING, refresh=1)]
    try:
        model.calibration.rd_thresholds = every_drift
        as_every_drift = kept(MOVING)
        model.calibration.rd_thresholds, model.calibration.rd_continuing_thresholds = fresh, every_drift
        assert kept(MOVING) == as_every_drift != before[0]  # the fresh window 0 of the chain too
        assert sum(as_every_drift) > sum(before[0])
        assert kept(MOVING[:9]) == before[1]  # one window: no chain
        assert kept(MOVING, refresh=1) == before[2]  # independent windows: no chain
        loaded = InfoTok.from_pretrained(model.save_pretrained(tmp_path / "m"))
        assert loaded.calibration.rd_continuing_thresholds == every_drift
    finally:
        model.calibration.rd_thresholds, model.calibration.rd_continuing_thresholds = fresh, []


def test_calibrate_measures_a_chains_thresholds_on_windows_that_continue_each_other(model, tmp_path):
    paths = [write_video(tmp_path / f"c{s}.mp4", synthetic_video(41, 32, 32, seed=s), fps=12) for s in range(3)]
    result = calibrate(model, paths, size=32, frames=9)
    assert result["continuing_windows"] == 12  # five whole windows of 9 frames in each clip: four continue
    assert result["key_density"] == 0.25  # an adaptive checkpoint: sparse key frames (tests/test_sparse_key.py)
    chains = load_chains(model, paths, 32, 9)
    hit = 0
    for (rate, fresh), (same, threshold) in zip(result["rd_thresholds"], result["rd_continuing_thresholds"]):
        assert same == rate and (threshold == fresh if fresh <= 0 else 0 <= threshold <= fresh)
        if 0 < threshold < fresh:  # reachable: the continuing windows' mean rate is the asked one
            assert np.mean(continuing_rates(model, chains, threshold, 0.25)) == pytest.approx(rate, abs=0.01)
            hit += 1
    assert hit >= 2
    short = calibrate(model, paths[:1], size=32, frames=41)  # one window a clip: nothing continues
    assert "rd_continuing_thresholds" not in short
