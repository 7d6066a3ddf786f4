"""ImageNet-pretrained backbones through timm (the transfer-learning issue fills this in)."""
