# MMSegmentation test config written by vocseg for official:upernet-r101-20k
# (upernet_r101_512x512_20k_voc12aug: published val mIoU 77.1, 78.29 with multi-scale + flip).
# Evaluate with `vocseg eval` or mmseg's tools/test.py.

default_scope = 'mmseg'

# stack fixes and vocseg's metric
custom_imports = {'imports': ['vocseg.mmseg_plugin'], 'allow_failed_imports': False}

work_dir = 'runs/official-upernet-r101-20k'

crop_size = (512, 512)

# UPerNet + ResNetV1c-101; BN (SyncBN needs several GPUs); the checkpoint holds the weights
model = {'type': 'EncoderDecoder',
 'data_preprocessor': {'type': 'VocsegSegDataPreProcessor',
                       'mean': [123.675, 116.28, 103.53],
                       'std': [58.395, 57.12, 57.375],
                       'bgr_to_rgb': True,
                       'pad_val': 0,
                       'seg_pad_val': 255,
                       'size': (512, 512)},
 'pretrained': None,
 'backbone': {'type': 'ResNetV1c',
              'depth': 101,
              'stem_channels': 64,
              'base_channels': 64,
              'num_stages': 4,
              'out_indices': (0, 1, 2, 3),
              'dilations': (1, 1, 1, 1),
              'strides': (1, 2, 2, 2),
              'norm_cfg': {'type': 'BN', 'requires_grad': True},
              'norm_eval': False,
              'style': 'pytorch',
              'contract_dilation': True},
 'decode_head': {'type': 'UPerHead',
                 'in_channels': [256, 512, 1024, 2048],
                 'in_index': [0, 1, 2, 3],
                 'pool_scales': (1, 2, 3, 6),
                 'channels': 512,
                 'dropout_ratio': 0.1,
                 'num_classes': 21,
                 'norm_cfg': {'type': 'BN', 'requires_grad': True},
                 'align_corners': False,
                 'loss_decode': {'type': 'CrossEntropyLoss', 'use_sigmoid': False, 'loss_weight': 1.0}},
 'auxiliary_head': {'type': 'FCNHead',
                    'in_channels': 1024,
                    'in_index': 2,
                    'channels': 256,
                    'num_convs': 1,
                    'concat_input': False,
                    'dropout_ratio': 0.1,
                    'num_classes': 21,
                    'norm_cfg': {'type': 'BN', 'requires_grad': True},
                    'align_corners': False,
                    'loss_decode': {'type': 'CrossEntropyLoss', 'use_sigmoid': False, 'loss_weight': 0.4}},
 'train_cfg': {},
 'test_cfg': {'mode': 'whole'}}

# the official test pipeline: Resize (2048, 512), keep ratio
test_pipeline = [{'type': 'VocsegLoadImageFromFile'},
 {'type': 'Resize', 'scale': (2048, 512), 'keep_ratio': True},
 {'type': 'VocsegLoadAnnotations'},
 {'type': 'PackSegInputs'}]

# VOC 2012 val; set data_root or pass --data-root to vocseg
val_dataloader = {'batch_size': 1,
 'num_workers': 2,
 'persistent_workers': True,
 'sampler': {'type': 'DefaultSampler', 'shuffle': False},
 'dataset': {'type': 'VocsegVOCDataset',
             'data_root': '/data/voc/VOCdevkit/VOC2012',
             'data_prefix': {'img_path': 'JPEGImages', 'seg_map_path': 'SegmentationClass'},
             'ann_file': 'ImageSets/Segmentation/val.txt',
             'pipeline': [{'type': 'VocsegLoadImageFromFile'},
                          {'type': 'Resize', 'scale': (2048, 512), 'keep_ratio': True},
                          {'type': 'VocsegLoadAnnotations'},
                          {'type': 'PackSegInputs'}]}}

test_dataloader = {'batch_size': 1,
 'num_workers': 2,
 'persistent_workers': True,
 'sampler': {'type': 'DefaultSampler', 'shuffle': False},
 'dataset': {'type': 'VocsegVOCDataset',
             'data_root': '/data/voc/VOCdevkit/VOC2012',
             'data_prefix': {'img_path': 'JPEGImages', 'seg_map_path': 'SegmentationClass'},
             'ann_file': 'ImageSets/Segmentation/val.txt',
             'pipeline': [{'type': 'VocsegLoadImageFromFile'},
                          {'type': 'Resize', 'scale': (2048, 512), 'keep_ratio': True},
                          {'type': 'VocsegLoadAnnotations'},
                          {'type': 'PackSegInputs'}]}}

val_evaluator = {'type': 'VocsegPerClassIoUMetric',
 'iou_metrics': ['mIoU', 'mDice', 'mFscore'],
 'collect_dir': 'runs/official-upernet-r101-20k/.dist_test'}

test_evaluator = {'type': 'VocsegPerClassIoUMetric',
 'iou_metrics': ['mIoU', 'mDice', 'mFscore'],
 'collect_dir': 'runs/official-upernet-r101-20k/.dist_test'}

val_cfg = {'type': 'ValLoop'}

test_cfg = {'type': 'TestLoop'}

default_hooks = {'timer': {'type': 'IterTimerHook'},
 'logger': {'type': 'LoggerHook', 'interval': 50, 'log_metric_by_epoch': False}}

env_cfg = {'cudnn_benchmark': False,
 'mp_cfg': {'mp_start_method': 'fork', 'opencv_num_threads': 0},
 'dist_cfg': {'backend': 'nccl'}}

vis_backends = [{'type': 'LocalVisBackend'}]

visualizer = {'type': 'SegLocalVisualizer', 'vis_backends': [{'type': 'LocalVisBackend'}], 'name': 'visualizer'}

log_processor = {'by_epoch': False}

log_level = 'INFO'

load_from = None

resume = False

tta_model = {'type': 'SegTTAModel'}

# official multi-scale (0.5-1.75) + flip, used by `vocseg eval --tta` and tools/test.py --tta
tta_pipeline = [{'type': 'VocsegLoadImageFromFile'},
 {'type': 'TestTimeAug',
  'transforms': [[{'type': 'Resize', 'scale_factor': 0.5, 'keep_ratio': True},
                  {'type': 'Resize', 'scale_factor': 0.75, 'keep_ratio': True},
                  {'type': 'Resize', 'scale_factor': 1.0, 'keep_ratio': True},
                  {'type': 'Resize', 'scale_factor': 1.25, 'keep_ratio': True},
                  {'type': 'Resize', 'scale_factor': 1.5, 'keep_ratio': True},
                  {'type': 'Resize', 'scale_factor': 1.75, 'keep_ratio': True}],
                 [{'type': 'RandomFlip', 'prob': 0.0, 'direction': 'horizontal'},
                  {'type': 'RandomFlip', 'prob': 1.0, 'direction': 'horizontal'}],
                 [{'type': 'VocsegLoadAnnotations'}],
                 [{'type': 'PackSegInputs'}]]}]
