from __future__ import annotations

import pytest
import torch

from lrcn.backbones import BACKBONE_NAMES, BackboneError, backbone_channels, build_backbone


def test_missing_torchvision_weights_name_the_file_to_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub: the weights are not there
    with pytest.raises(BackboneError, match=r"place resnet18-\w+\.pth at .*checkpoints"):
        build_backbone("resnet18", pretrained=True)


def test_unknown_backbone():
    with pytest.raises(BackboneError, match="unknown backbone 'vgg'"):
        build_backbone("vgg", pretrained=False)


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_feature_maps_have_the_declared_channels(name):
    # ImageNet weights ship offline only for efficientnet_lite0; the others train from scratch.
    model = build_backbone(name, pretrained=name == "efficientnet_lite0").eval()
    with torch.no_grad():
        features = model(torch.zeros(1, 3, 64, 64))
    assert features.shape[1] == backbone_channels(name)
