"""Model presets: UPerNet on ResNetV1c as in mmseg's configs/upernet, plus small ones.

Each preset names the pretrained weights that match its backbone: ResNetV1c has the deep stem
(three 3x3 convs, keys `stem.*`), so it takes `open-mmlab://resnetXX_v1c`, never
`torchvision://resnetXX` (a 7x7 `conv1` stem whose weights would silently not load).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vocseg.data.voc import IGNORE_INDEX, NUM_CLASSES

# Where mmengine's `open-mmlab://` names resolve (mmengine/hub/openmmlab.json); the 8 hex digits
# in each file name are the start of its sha256.
PRETRAINED_URLS: dict[str, str] = {
    "open-mmlab://resnet18_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet18_v1c-b5776b93.pth",
    "open-mmlab://resnet50_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth",
    "open-mmlab://resnet101_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth",
}


@dataclass(frozen=True)
class ModelPreset:
    name: str
    description: str
    depth: int
    stem_channels: int
    base_channels: int
    head_channels: int
    aux_channels: int
    crop: int
    pretrained: str | None  # the weights that match this backbone
    base_lr: float = 0.01  # at batch 16: the official recipe; higher for a backbone trained from scratch
    scale: tuple[int, int] = (2048, 512)  # RandomResize / test Resize target (long, short), as the official recipe

    @property
    def stage_channels(self) -> list[int]:
        # Bottleneck (depth >= 50) widens each stage 4x; BasicBlock does not.
        expansion = 4 if self.depth >= 50 else 1
        return [self.base_channels * expansion * 2**i for i in range(4)]


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset("r50", "UPerNet + ResNetV1c-50, the official recipe", 50, 64, 64, 512, 256, 512, "open-mmlab://resnet50_v1c"),
        ModelPreset("r101", "UPerNet + ResNetV1c-101", 101, 64, 64, 512, 256, 512, "open-mmlab://resnet101_v1c"),
        ModelPreset("r18", "UPerNet + ResNetV1c-18, light", 18, 64, 64, 256, 64, 512, "open-mmlab://resnet18_v1c"),
        ModelPreset("tiny", "narrow UPerNet + ResNetV1c-18 for CPU tests and the demo", 18, 16, 16, 32, 16, 96, None, base_lr=0.1, scale=(384, 96)),
    )
}
DEFAULT_MODEL = "r50"


def model_config(preset: ModelPreset, *, sync_bn: bool, pretrained_checkpoint: str | None, channels_last: bool = False) -> dict[str, Any]:
    """mmseg's EncoderDecoder(ResNetV1c, UPerHead, FCNHead aux) for a preset.

    Pretrained weights go in `backbone.init_cfg` only: setting `model.pretrained` too trips
    mmseg's "init_cfg and pretrained cannot be setting at the same time".
    """
    norm_cfg = dict(type="SyncBN" if sync_bn else "BN", requires_grad=True)
    channels = preset.stage_channels
    backbone: dict[str, Any] = dict(
        type="ResNetV1c",
        depth=preset.depth,
        stem_channels=preset.stem_channels,
        base_channels=preset.base_channels,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 1, 1),
        strides=(1, 2, 2, 2),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style="pytorch",
        contract_dilation=True,
    )
    if pretrained_checkpoint:
        backbone["init_cfg"] = dict(type="Pretrained", checkpoint=pretrained_checkpoint)
    return dict(
        type="EncoderDecoder",
        data_preprocessor=dict(
            # vocseg's: MMSeg's batch bit for bit, by table lookup on the CPU (data/batches.py), channels_last when asked
            type="VocsegSegDataPreProcessor",
            **(dict(channels_last=True) if channels_last else {}),
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_val=0,
            seg_pad_val=IGNORE_INDEX,
            size=(preset.crop, preset.crop),
        ),
        pretrained=None,
        backbone=backbone,
        decode_head=dict(
            type="UPerHead",
            in_channels=channels,
            in_index=[0, 1, 2, 3],
            pool_scales=(1, 2, 3, 6),
            channels=preset.head_channels,
            dropout_ratio=0.1,
            num_classes=NUM_CLASSES,
            norm_cfg=norm_cfg,
            align_corners=False,
            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
        ),
        auxiliary_head=dict(
            type="FCNHead",
            in_channels=channels[2],
            in_index=2,
            channels=preset.aux_channels,
            num_convs=1,
            concat_input=False,
            dropout_ratio=0.1,
            num_classes=NUM_CLASSES,
            norm_cfg=norm_cfg,
            align_corners=False,
            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4),
        ),
        train_cfg=dict(),
        test_cfg=dict(mode="whole"),
    )
