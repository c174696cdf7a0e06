"""Learned perceptual metrics, LPIPS and FVD, from network weights the user provides.

Nothing is downloaded: both networks are read from local files and a missing or wrong file is a
`PerceptualWeightsError` naming what was expected.

- LPIPS (Zhang et al. 2018, v0.1): a torchvision ImageNet AlexNet or VGG16 state dict (the
  `alexnet-owt-7be5be79.pth` / `vgg16-397923af.pth` files torchvision caches, or a safetensors copy)
  for the backbone; the per-layer linear heads ship inside torchmetrics (package data, no download)
  unless the file carries its own `lin{0..4}.model.1.weight`. Computed per frame on [-1, 1] images at
  the evaluation resolution and averaged over frames.
- FVD (Unterthiner et al. 2018): a TorchScript video feature network, e.g. the I3D
  `i3d_torchscript.pt` of StyleGAN-V and most FVD code. It gets [B, 3, T, 224, 224] in [-1, 1]
  (bilinear, antialiased resize here) and, when its forward takes them, `rescale=False,
  resize=False, return_features=True`. FVD is the Frechet distance between the features of the
  original and reconstructed clips of a run, so it needs at least two clips and is noisy with few.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# torchvision's `features` layouts: (in, out, kernel, stride, padding) per conv, "M" = 3x3/2 (AlexNet)
# or 2x2/2 (VGG) max-pool; LPIPS taps the ReLU after the listed convolutions.
_ALEX = [(3, 64, 11, 4, 2), "M", (64, 192, 5, 1, 2), "M", (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1)]
_VGG16 = [
    (3, 64),
    (64, 64),
    "M",
    (64, 128),
    (128, 128),
    "M",
    (128, 256),
    (256, 256),
    (256, 256),
    "M",
    (256, 512),
    (512, 512),
    (512, 512),
    "M",
    (512, 512),
    (512, 512),
    (512, 512),
]
_TAPS = {"alex": (0, 1, 2, 3, 4), "vgg": (1, 3, 6, 9, 12)}  # indices of tapped convs
_HEAD_KEYS = [f"lin{i}.model.1.weight" for i in range(5)]


class PerceptualWeightsError(ValueError):
    """A perceptual-metric weights file is missing, unreadable or not the expected network."""


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise PerceptualWeightsError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, no code
    except Exception as exc:  # noqa: BLE001 - any reader failure means "not a weights file"
        raise PerceptualWeightsError(f"{path}: not a readable state dict ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PerceptualWeightsError(f"{path}: expected a state dict of tensors")
    return state


def _backbone(kind: str) -> tuple[nn.Sequential, list[int]]:
    """torchvision's `features` module for AlexNet or VGG16 (same indices, so its keys load) and the
    module indices whose outputs LPIPS reads."""
    layers, taps, conv = [], [], 0
    for spec in _ALEX if kind == "alex" else _VGG16:
        if spec == "M":
            layers.append(nn.MaxPool2d(3, 2) if kind == "alex" else nn.MaxPool2d(2, 2))
            continue
        cin, cout, k, s, p = spec if kind == "alex" else (*spec, 3, 1, 1)
        layers += [nn.Conv2d(cin, cout, k, s, p), nn.ReLU(inplace=False)]
        if conv in _TAPS[kind]:
            taps.append(len(layers) - 1)
        conv += 1
    return nn.Sequential(*layers), taps


class LPIPS(nn.Module):
    """LPIPS v0.1 distance: unit-normalised backbone features, squared difference, learned 1x1
    weights, spatial mean, summed over five layers."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.features, self.taps = _backbone(kind)
        widths = [self.features[i - 1].out_channels for i in self.taps]
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in widths)
        # the LPIPS input scaling layer (ImageNet statistics expressed on [-1, 1])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu") -> "LPIPS":
        state = _read_state_dict(path)
        first = state.get("features.0.weight")
        if first is None or first.dim() != 4 or tuple(first.shape[1:]) not in {(3, 11, 11), (3, 3, 3)}:
            raise PerceptualWeightsError(
                f"{path}: not a torchvision AlexNet or VGG16 state dict (needs features.0.weight of shape "
                f"[64, 3, 11, 11] or [64, 3, 3, 3])"
            )
        model = cls("alex" if first.shape[-1] == 11 else "vgg")
        features = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        heads = {k: state[k] for k in _HEAD_KEYS if k in state} or _bundled_heads(model.kind)
        try:
            model.features.load_state_dict(features)
            model.heads.load_state_dict({f"{i}.weight": heads[k] for i, k in enumerate(_HEAD_KEYS)})
        except (RuntimeError, KeyError) as exc:
            raise PerceptualWeightsError(f"{path}: does not fit LPIPS-{model.kind}: {exc}") from None
        return model.to(device)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-image distance [N] between image batches [N, 3, H, W] in [-1, 1]."""
        x = torch.cat([a, b]).float()
        x = (x - self.shift) / self.scale
        total = torch.zeros(len(a), device=a.device)
        for i, layer in enumerate(self.features[: self.taps[-1] + 1]):
            x = layer(x)
            if i in self.taps:
                f = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                fa, fb = f.chunk(2)
                total = total + self.heads[self.taps.index(i)]((fa - fb) ** 2).mean((1, 2, 3))
        return total

    @torch.no_grad()
    def video_distance(self, reference: np.ndarray, distorted: np.ndarray, batch: int = 8) -> float:
        """Mean LPIPS over the frames of two uint8 videos [T, H, W, 3]."""
        device = self.shift.device
        values = []
        for i in range(0, len(reference), batch):
            a, b = (_to_unit(v[i : i + batch]).to(device) for v in (reference, distorted))
            values.append(self(a, b).cpu())
        return float(torch.cat(values).mean())


def _bundled_heads(kind: str) -> dict[str, torch.Tensor]:
    """The LPIPS v0.1 linear heads that torchmetrics installs as package data."""
    import torchmetrics.functional.image as tm_image

    path = Path(tm_image.__file__).parent / "lpips_models" / f"{kind}.pth"
    if not path.is_file():
        raise PerceptualWeightsError(
            f"the LPIPS heads are not in this torchmetrics install ({path}); "
            f"pass a weights file that also holds {', '.join(_HEAD_KEYS)}"
        )
    return _read_state_dict(path)


def _to_unit(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [T, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1


class VideoFeatures:
    """A TorchScript video network used as FVD's feature extractor (one vector per clip)."""

    SIZE = 224

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        path = Path(path)
        if not path.is_file():
            raise PerceptualWeightsError(f"{path}: no such weights file")
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, but it is how FVD's I3D is shared
                warnings.simplefilter("ignore", DeprecationWarning)
                self.net = torch.jit.load(str(path), map_location=device).eval()
        except Exception as exc:  # noqa: BLE001
            raise PerceptualWeightsError(f"{path}: not a TorchScript module ({type(exc).__name__}: {exc})") from None
        self.path, self.device = path, device
        arguments = {a.name for a in self.net.forward.schema.arguments}
        self.kwargs = (
            {"rescale": False, "resize": False, "return_features": True}
            if {"rescale", "resize", "return_features"} <= arguments
            else {}
        )

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [T, H, W, 3] -> feature vector [D]."""
        x = F.interpolate(
            _to_unit(frames), size=(self.SIZE, self.SIZE), mode="bilinear", align_corners=False, antialias=True
        ).clamp(-1, 1)
        out = self.net(x.permute(1, 0, 2, 3)[None].to(self.device), **self.kwargs)
        if not isinstance(out, torch.Tensor) or out.shape[0] != 1:
            raise PerceptualWeightsError(
                f"{self.path}: expected a [1, D] feature tensor from the network, got "
                f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}"
            )
        return out.reshape(-1).float().cpu().numpy()


@dataclass
class Perceptual:
    """The optional learned metrics of one evaluation run."""

    lpips: LPIPS | None = None
    fvd: VideoFeatures | None = None

    @classmethod
    def from_paths(
        cls, lpips_weights: str | None, fvd_weights: str | None, device: str | torch.device = "cpu"
    ) -> "Perceptual | None":
        if not lpips_weights and not fvd_weights:
            return None
        return cls(
            LPIPS.from_file(lpips_weights, device) if lpips_weights else None,
            VideoFeatures(fvd_weights, device) if fvd_weights else None,
        )
