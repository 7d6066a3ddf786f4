"""A small ResNet for small images (28-64 px): 3x3 stem, three stages, global pooling."""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.models.layers import ConvNet


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def small_resnet(num_classes: int, in_chans: int, img_size: int,
                 widths: tuple[int, ...] = (32, 64, 128), depths: tuple[int, ...] = (1, 1, 1),
                 drop: float = 0.1) -> ConvNet:
    stem = nn.Sequential(nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False),
                         nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
    stages: list[nn.Module] = [stem]
    cin = widths[0]
    for i, (width, depth) in enumerate(zip(widths, depths)):
        blocks = [BasicBlock(cin if j == 0 else width, width, 2 if (i > 0 and j == 0) else 1)
                  for j in range(depth)]
        stages.append(nn.Sequential(*blocks))
        cin = width
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(drop))
    return ConvNet(nn.Sequential(*stages), head, cin, num_classes)
