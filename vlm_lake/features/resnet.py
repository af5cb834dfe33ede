"""ResNet-50 in plain torch, with torchvision's ``state_dict`` layout (no torchvision).

The module tree mirrors ``torchvision.models.resnet50`` (ResNet v1.5: the stride sits on
the 3x3 convolution of each bottleneck) attribute for attribute, so ``state_dict()`` has
exactly torchvision's 320 keys and shapes and a torchvision checkpoint
(``resnet50-11ad3fa6.pth``, ``resnet50-0676ba61.pth``...) loads with ``strict=True``.

Random initialisation follows torchvision's (Kaiming-normal ``fan_out`` convolutions,
unit batch-norm scale, default ``Linear``) under a fixed seed, so two workers that build
the model without weights get bit-identical parameters.

:func:`fold_batch_norm` turns a model into an inference-only copy with every batch norm
folded into the convolution before it: the same function with a third fewer kernels.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

#: Blocks per stage of ResNet-50.
RESNET50_LAYERS: tuple[int, int, int, int] = (3, 4, 6, 3)
#: Classes of the ImageNet classifier ``fc``.
NUM_CLASSES = 1000
#: Parameters of torchvision's ``resnet50()`` (``fc`` included).
RESNET50_PARAMETERS = 25_557_032


class Bottleneck(nn.Module):
    """torchvision's ``Bottleneck``: 1x1 -> 3x3 (stride) -> 1x1 with a residual."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        width = planes
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block."""
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNet50(nn.Module):
    """ResNet-50 with torchvision's attribute names.

    ``forward`` returns the ImageNet logits like torchvision's; :meth:`features` returns
    the 2048-d globally average-pooled features (everything but ``fc``).
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._stage(64, RESNET50_LAYERS[0], stride=1)
        self.layer2 = self._stage(128, RESNET50_LAYERS[1], stride=2)
        self.layer3 = self._stage(256, RESNET50_LAYERS[2], stride=2)
        self.layer4 = self._stage(512, RESNET50_LAYERS[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
        self._init_like_torchvision()

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [Bottleneck(self.inplanes, planes, stride)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_like_torchvision(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised images -> ``[B, 2048]`` pooled features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, num_classes]`` logits (torchvision's forward)."""
        return self.fc(self.features(x))


def resnet50(seed: int = 0) -> ResNet50:
    """Build a ResNet-50 initialised like torchvision's, deterministically from ``seed``.

    The global RNG is left untouched (the seed applies inside a forked RNG state).

    Args:
        seed: Seed of the random initialisation.

    Returns:
        The model in eval mode, on the CPU, float32.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResNet50()
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers such as running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution with bias equal to ``bn(conv(x))`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        bias=True,
    )
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


def fold_batch_norm(model: ResNet50) -> ResNet50:
    """Return an inference copy of ``model`` with each batch norm folded into its conv.

    The copy computes the same features (up to float rounding) with one kernel fewer per
    convolution; its batch norms are replaced by ``Identity``, so it cannot be trained and
    its ``state_dict`` is not torchvision's. ``model`` is not modified.
    """
    folded = copy.deepcopy(model).eval()
    folded.conv1, folded.bn1 = _fold(folded.conv1, folded.bn1), nn.Identity()  # type: ignore[assignment]
    for stage in (folded.layer1, folded.layer2, folded.layer3, folded.layer4):
        for block in stage:
            assert isinstance(block, Bottleneck)
            block.conv1, block.bn1 = _fold(block.conv1, block.bn1), nn.Identity()  # type: ignore[assignment]
            block.conv2, block.bn2 = _fold(block.conv2, block.bn2), nn.Identity()  # type: ignore[assignment]
            block.conv3, block.bn3 = _fold(block.conv3, block.bn3), nn.Identity()  # type: ignore[assignment]
            if block.downsample is not None:
                conv, bn = block.downsample[0], block.downsample[1]
                block.downsample = nn.Sequential(_fold(conv, bn))
    return folded
