"""LPIPS and FVD from user-supplied weights: the definition, the file handling, the eval wiring.

No real network weights exist on this machine, so the networks here are random ones saved in the
formats users have (a torchvision state dict, a TorchScript module); LPIPS is checked against
torchmetrics' implementation of the same definition on the same weights.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from infotok.cli import main
from infotok.eval import frechet_distance
from infotok.perceptual import LPIPS, Perceptual, PerceptualWeightsError, VideoFeatures, _backbone
from infotok.video import synthetic_video, write_video


def backbone_file(tmp_path, kind="alex", suffix=".pth", seed=0):
    """A random torchvision-layout state dict (features.* plus a classifier LPIPS ignores)."""
    torch.manual_seed(seed)
    features, _ = _backbone(kind)
    state = {f"features.{k}": v for k, v in features.state_dict().items()} | {"classifier.1.weight": torch.randn(4, 9)}
    path = tmp_path / f"{kind}{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    return path


class TinyI3D(torch.nn.Module):
    """Same call signature as StyleGAN-V's i3d_torchscript.pt; features depend on motion and colour."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 6, 3, padding=1)

    def forward(
        self, videos: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = False
    ) -> torch.Tensor:
        assert not rescale and not resize and return_features  # what infotok must pass
        return torch.relu(self.conv(videos)).mean((2, 3, 4))


class PlainNet(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.mean((1, 2, 3, 4)), x.std((1, 2, 3, 4))], 1)


def scripted(tmp_path, module, name="i3d_torchscript.pt"):
    torch.manual_seed(0)
    path = tmp_path / name
    with warnings.catch_warnings():  # the format FVD weights are shared in, deprecated in torch 2.13
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module).save(str(path))
    return path


def frames(seed, t=9, h=48, w=64):
    return synthetic_video(t, h, w, seed=seed)


@pytest.mark.parametrize("kind,suffix", [("alex", ".pth"), ("vgg", ".safetensors")])
def test_lpips_matches_torchmetrics_on_the_same_weights(tmp_path, monkeypatch, kind, suffix):
    import torchmetrics.functional.image.lpips as tm

    ours = LPIPS.from_file(backbone_file(tmp_path, kind, suffix))
    assert ours.kind == kind
    # torchmetrics builds the backbone with torchvision (not installable beside this torch): hand it ours
    monkeypatch.setattr(tm, "_get_tv_model_features", lambda net, pretrained=False: ours.features)
    reference = tm._LPIPS(pretrained=True, net=kind, pnet_rand=True).eval()
    torch.manual_seed(1)
    a, b = torch.rand(3, 3, 64, 64) * 2 - 1, torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expected = reference(a, b).flatten()
        got = ours(a, b)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert (got > 0).all()


def test_lpips_is_zero_on_identical_videos_and_grows_with_distortion(tmp_path):
    lpips = LPIPS.from_file(backbone_file(tmp_path))
    video = frames(0, t=5)
    noisy = np.clip(video + np.random.default_rng(0).normal(0, 8, video.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(video + np.random.default_rng(0).normal(0, 40, video.shape), 0, 255).astype(np.uint8)
    assert lpips.video_distance(video, video) == 0
    assert 0 < lpips.video_distance(video, noisy) < lpips.video_distance(video, noisier)
    assert lpips.video_distance(video, noisy, batch=2) == pytest.approx(lpips.video_distance(noisy, video), rel=1e-5)


def test_lpips_file_can_carry_its_own_heads(tmp_path):
    path = backbone_file(tmp_path)
    state = torch.load(path, weights_only=True)
    widths = (64, 192, 384, 256, 256)
    torch.save(state | {f"lin{i}.model.1.weight": torch.full((1, c, 1, 1), 2.0) for i, c in enumerate(widths)}, path)
    lpips = LPIPS.from_file(path)
    assert all((h.weight == 2).all() for h in lpips.heads)


@pytest.mark.parametrize(
    "content,match",
    [
        (None, "no such weights file"),
        (b"not a checkpoint", "not a readable state dict"),
        ({"features.0.weight": torch.zeros(64, 3, 7, 7)}, "not a torchvision AlexNet or VGG16"),
        ({"features.0.weight": torch.zeros(64, 3, 11, 11)}, "does not fit LPIPS-alex"),
    ],
    ids=["missing", "text", "other-network", "incomplete"],
)
def test_lpips_rejects_wrong_files(tmp_path, content, match):
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(PerceptualWeightsError, match=match):
        LPIPS.from_file(path)


def test_lpips_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": torch.zeros(1), "hook": print}, path)  # a callable needs full unpickling
    with pytest.raises(PerceptualWeightsError, match="not a readable state dict"):
        LPIPS.from_file(path)


def test_video_features_call_the_i3d_signature_and_resize_to_224(tmp_path):
    extractor = VideoFeatures(scripted(tmp_path, TinyI3D()))
    assert extractor.kwargs == {"rescale": False, "resize": False, "return_features": True}
    feats = extractor(frames(0))
    assert feats.shape == (6,) and feats.dtype == np.float32
    plain = VideoFeatures(scripted(tmp_path, PlainNet(), "plain.pt"))
    assert plain.kwargs == {}
    mean, _ = plain(np.full((4, 30, 40, 3), 255, np.uint8))
    assert mean == pytest.approx(1.0)  # uint8 255 -> +1


def test_fvd_is_zero_for_identical_sets_and_larger_for_worse_ones(tmp_path):
    extractor = VideoFeatures(scripted(tmp_path, TinyI3D()))
    videos = [frames(s) for s in range(4)]
    rng = np.random.default_rng(0)
    blur = [np.clip(v + rng.normal(0, 30, v.shape), 0, 255).astype(np.uint8) for v in videos]
    ref = np.stack([extractor(v) for v in videos])
    assert frechet_distance(ref, ref) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(ref, np.stack([extractor(v) for v in blur])) > 1e-4


@pytest.mark.parametrize(
    "content,match",
    [(None, "no such weights file"), (b"\x00" * 64, "not a TorchScript module")],
    ids=["missing", "zeros"],
)
def test_video_features_reject_wrong_files(tmp_path, content, match):
    path = tmp_path / "i3d.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PerceptualWeightsError, match=match):
        VideoFeatures(path)


def test_perceptual_is_off_without_paths():
    assert Perceptual.from_paths(None, None) is None


def test_eval_reports_lpips_and_fvd_with_user_weights(tmp_path, capsys, tiny_checkpoint):
    videos = tmp_path / "videos"
    for seed in range(3):
        write_video(videos / f"v{seed}.mp4", frames(seed, t=9, h=40, w=40), fps=12)
    code = main(
        [
            "eval",
            str(videos),
            "--rates",
            "1,0.5",
            "--size",
            "32",
            "--frames",
            "9",
            "--checkpoint",
            str(tiny_checkpoint),
            "--lpips-weights",
            str(backbone_file(tmp_path)),
            "--fvd-weights",
            str(scripted(tmp_path, TinyI3D())),
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "LPIPS" in out and "FVD" in out
    report = json.loads((tmp_path / "r.json").read_text())
    full, half = report["results"]
    assert 0 < full["lpips"] <= half["lpips"] and full["fvd"] >= 0 and half["fvd"] >= 0
    assert all("lpips" in r and "_fvd" not in r for r in report["per_video"])


def test_eval_with_a_wrong_weights_file_is_one_line_exit_2(tmp_path, capsys, tiny_checkpoint, sample_video):
    bad = tmp_path / "alexnet.pth"
    bad.write_text("hello")
    code = main(["eval", str(sample_video), "--checkpoint", str(tiny_checkpoint), "--lpips-weights", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and "not a readable state dict" in err and "Traceback" not in err
