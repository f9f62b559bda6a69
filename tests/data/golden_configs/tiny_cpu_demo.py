# MMSegmentation config written by `vocseg config`; standalone (no _base_).
# Model tiny, VOC 2012 + SBD (aug), 1 process(es) x batch 8, 3000 iterations.
# Train with `vocseg train THIS_FILE` or mmseg's tools/train.py.

default_scope = 'mmseg'

# stack fixes (mmcv-lite ops, safe checkpoint loading) and vocseg's loop/sampler/hooks
custom_imports = {'imports': ['vocseg.mmseg_plugin'], 'allow_failed_imports': False}

work_dir = '/work/runs/tiny_cpu_demo'

# the recipe this file was written from (vocseg reads it back)
vocseg_recipe = ('{\n'
 ' "amp": null,\n'
 ' "aug": true,\n'
 ' "base_batch": 16,\n'
 ' "base_lr": null,\n'
 ' "batch": 8,\n'
 ' "channels_last": null,\n'
 ' "ckpt_interval": null,\n'
 ' "crop": null,\n'
 ' "cudnn_benchmark": null,\n'
 ' "data_root": "/data/demo",\n'
 ' "deterministic": false,\n'
 ' "device": "cpu",\n'
 ' "epochs": null,\n'
 ' "extra": {},\n'
 ' "gpus": "first:1",\n'
 ' "gpus_grammar": 2,\n'
 ' "iters": 3000,\n'
 ' "keep": 3,\n'
 ' "lr": null,\n'
 ' "model": "tiny",\n'
 ' "name": null,\n'
 ' "nnodes": 1,\n'
 ' "nproc": 1,\n'
 ' "num_workers": 2,\n'
 ' "pin_memory": null,\n'
 ' "pretrained": "auto",\n'
 ' "schedule": null,\n'
 ' "seed": 0,\n'
 ' "val_interval": null,\n'
 ' "warmup_iters": 0\n'
 '}')

# model preset 'tiny'
crop_size = (96, 96)

# narrow UPerNet + ResNetV1c-18 for CPU tests and the demo; SyncBN only when several GPUs share the batch; pretrained: none
model = {'type': 'EncoderDecoder',
 'data_preprocessor': {'type': 'VocsegSegDataPreProcessor',
                       'mean': [123.675, 116.28, 103.53],
                       'std': [58.395, 57.12, 57.375],
                       'bgr_to_rgb': True,
                       'pad_val': 0,
                       'seg_pad_val': 255,
                       'size': (96, 96)},
 'pretrained': None,
 'backbone': {'type': 'ResNetV1c',
              'depth': 18,
              'stem_channels': 16,
              'base_channels': 16,
              'num_stages': 4,
              'out_indices': (0, 1, 2, 3),
              'dilations': (1, 1, 1, 1),
              'strides': (1, 2, 2, 2),
              'norm_cfg': {'type': 'BN', 'requires_grad': True},
              'norm_eval': False,
              'style': 'pytorch',
              'contract_dilation': True},
 'decode_head': {'type': 'UPerHead',
                 'in_channels': [16, 32, 64, 128],
                 'in_index': [0, 1, 2, 3],
                 'pool_scales': (1, 2, 3, 6),
                 'channels': 32,
                 'dropout_ratio': 0.1,
                 'num_classes': 21,
                 'norm_cfg': {'type': 'BN', 'requires_grad': True},
                 'align_corners': False,
                 'loss_decode': {'type': 'CrossEntropyLoss', 'use_sigmoid': False, 'loss_weight': 1.0}},
 'auxiliary_head': {'type': 'FCNHead',
                    'in_channels': 64,
                    'in_index': 2,
                    'channels': 16,
                    'num_convs': 1,
                    'concat_input': False,
                    'dropout_ratio': 0.1,
                    'num_classes': 21,
                    'norm_cfg': {'type': 'BN', 'requires_grad': True},
                    'align_corners': False,
                    'loss_decode': {'type': 'CrossEntropyLoss', 'use_sigmoid': False, 'loss_weight': 0.4}},
 'train_cfg': {},
 'test_cfg': {'mode': 'whole'}}

# the official VOC augmentation: resize to (384, 96) x 0.5-2.0, crop, flip, photometric
train_pipeline = [{'type': 'VocsegLoadImageFromFile'},
 {'type': 'VocsegLoadAnnotations'},
 {'type': 'VocsegRandomResizeCrop',
  'scale': (384, 96),
  'ratio_range': (0.5, 2.0),
  'keep_ratio': True,
  'crop_size': (96, 96),
  'cat_max_ratio': 0.75},
 {'type': 'VocsegRandomFlip', 'prob': 0.5},
 {'type': 'VocsegPhotoMetricDistortion'},
 {'type': 'VocsegPackSegInputs'}]

# used by `vocseg predict` (mmseg's inference_model)
test_pipeline = [{'type': 'VocsegLoadImageFromFile'},
 {'type': 'Resize', 'scale': (384, 96), 'keep_ratio': True},
 {'type': 'VocsegLoadAnnotations'},
 {'type': 'PackSegInputs'}]

# 10582 training images (VOC train + SBD aug); 8 per process x 1 = batch 8; the sampler reshuffles each epoch and skips trained batches on resume without loading them
train_dataloader = {'batch_size': 8,
 'num_workers': 2,
 'persistent_workers': True,
 'pin_memory': False,
 'sampler': {'type': 'VocsegResumableSampler', 'batch_size': 8, 'shuffle': True, 'seed': 0},
 'dataset': {'type': 'VocsegSeededDataset',
             'seed': 0,
             'dataset': {'type': 'ConcatDataset',
                         'datasets': [{'type': 'VocsegVOCDataset',
                                       'data_root': '/data/demo/VOCdevkit/VOC2012',
                                       'data_prefix': {'img_path': 'JPEGImages',
                                                       'seg_map_path': 'SegmentationClass'},
                                       'ann_file': 'ImageSets/Segmentation/train.txt',
                                       'pipeline': [{'type': 'VocsegLoadImageFromFile'},
                                                    {'type': 'VocsegLoadAnnotations'},
                                                    {'type': 'VocsegRandomResizeCrop',
                                                     'scale': (384, 96),
                                                     'ratio_range': (0.5, 2.0),
                                                     'keep_ratio': True,
                                                     'crop_size': (96, 96),
                                                     'cat_max_ratio': 0.75},
                                                    {'type': 'VocsegRandomFlip', 'prob': 0.5},
                                                    {'type': 'VocsegPhotoMetricDistortion'},
                                                    {'type': 'VocsegPackSegInputs'}]},
                                      {'type': 'VocsegVOCDataset',
                                       'data_root': '/data/demo/VOCdevkit/VOC2012',
                                       'data_prefix': {'img_path': 'JPEGImages',
                                                       'seg_map_path': 'SegmentationClassAug'},
                                       'ann_file': 'ImageSets/Segmentation/aug.txt',
                                       'pipeline': [{'type': 'VocsegLoadImageFromFile'},
                                                    {'type': 'VocsegLoadAnnotations'},
                                                    {'type': 'VocsegRandomResizeCrop',
                                                     'scale': (384, 96),
                                                     'ratio_range': (0.5, 2.0),
                                                     'keep_ratio': True,
                                                     'crop_size': (96, 96),
                                                     'cat_max_ratio': 0.75},
                                                    {'type': 'VocsegRandomFlip', 'prob': 0.5},
                                                    {'type': 'VocsegPhotoMetricDistortion'},
                                                    {'type': 'VocsegPackSegInputs'}]}]}}}

val_dataloader = {'batch_size': 1,
 'num_workers': 2,
 'persistent_workers': True,
 'pin_memory': False,
 'sampler': {'type': 'DefaultSampler', 'shuffle': False},
 'dataset': {'type': 'VocsegVOCDataset',
             'data_root': '/data/demo/VOCdevkit/VOC2012',
             'data_prefix': {'img_path': 'JPEGImages', 'seg_map_path': 'SegmentationClass'},
             'ann_file': 'ImageSets/Segmentation/val.txt',
             'pipeline': [{'type': 'VocsegLoadImageFromFile'},
                          {'type': 'Resize', 'scale': (384, 96), 'keep_ratio': True},
                          {'type': 'VocsegLoadAnnotations'},
                          {'type': 'PackSegInputs'}]}}

test_dataloader = {'batch_size': 1,
 'num_workers': 2,
 'persistent_workers': True,
 'pin_memory': False,
 'sampler': {'type': 'DefaultSampler', 'shuffle': False},
 'dataset': {'type': 'VocsegVOCDataset',
             'data_root': '/data/demo/VOCdevkit/VOC2012',
             'data_prefix': {'img_path': 'JPEGImages', 'seg_map_path': 'SegmentationClass'},
             'ann_file': 'ImageSets/Segmentation/val.txt',
             'pipeline': [{'type': 'VocsegLoadImageFromFile'},
                          {'type': 'Resize', 'scale': (384, 96), 'keep_ratio': True},
                          {'type': 'VocsegLoadAnnotations'},
                          {'type': 'PackSegInputs'}]}}

# several processes gather their results in collect_dir (inside the run folder)
val_evaluator = {'type': 'VocsegPerClassIoUMetric',
 'iou_metrics': ['mIoU', 'mDice', 'mFscore'],
 'collect_dir': '/work/runs/tiny_cpu_demo/.dist_test'}

test_evaluator = {'type': 'VocsegPerClassIoUMetric',
 'iou_metrics': ['mIoU', 'mDice', 'mFscore'],
 'collect_dir': '/work/runs/tiny_cpu_demo/.dist_test'}

# LR 0.05 = 0.1 x 8 / 16 (linear scaling from the base batch)
optim_wrapper = {'type': 'OptimWrapper',
 'optimizer': {'type': 'SGD', 'lr': 0.05, 'momentum': 0.9, 'weight_decay': 0.0005},
 'clip_grad': None}

# poly decay every iteration (never once per epoch)
param_scheduler = [{'type': 'PolyLR', 'eta_min': 0.0001, 'power': 0.9, 'begin': 0, 'end': 3000, 'by_epoch': False}]

# 3000 iterations = 3000 iterations as given; 2.3 epochs, 24000 samples, 0.04x the official 40k x 16 schedule
train_cfg = {'type': 'VocsegResumableIterLoop', 'max_iters': 3000, 'val_interval': 300}

val_cfg = {'type': 'ValLoop'}

test_cfg = {'type': 'TestLoop'}

# checkpoint every 300 iterations, keeping 3 and the best by mIoU
default_hooks = {'timer': {'type': 'IterTimerHook'},
 'logger': {'type': 'LoggerHook', 'interval': 50, 'log_metric_by_epoch': False},
 'param_scheduler': {'type': 'ParamSchedulerHook'},
 'checkpoint': {'type': 'VocsegCheckpointHook',
                'by_epoch': False,
                'interval': 300,
                'max_keep_ckpts': 3,
                'save_last': True,
                'save_best': 'mIoU',
                'rule': 'greater'},
 'sampler_seed': {'type': 'DistSamplerSeedHook'},
 'visualization': {'type': 'SegVisualizationHook'}}

# RNG states saved with each checkpoint: a resumed run continues the same random stream; training stops at a non-finite loss or model before anything of it is saved (VocsegHealthHook); torch threads sized to the cores left by the loader workers (unless OMP_NUM_THREADS is set)
custom_hooks = [{'type': 'VocsegRngStateHook'}, {'type': 'VocsegThreadsHook'}, {'type': 'VocsegHealthHook'}]

# OpenCV single-threaded; VocsegThreadsHook gives torch's intra-op threads the cores the loader workers leave
env_cfg = {'cudnn_benchmark': False,
 'mp_cfg': {'mp_start_method': 'fork', 'opencv_num_threads': 0},
 'dist_cfg': {'backend': 'gloo'}}

# fixed up front: the sampler's order must not depend on a seed restored later
randomness = {'seed': 0, 'deterministic': False}

vis_backends = [{'type': 'LocalVisBackend'}]

visualizer = {'type': 'SegLocalVisualizer', 'vis_backends': [{'type': 'LocalVisBackend'}], 'name': 'visualizer'}

log_processor = {'by_epoch': False}

log_level = 'INFO'

load_from = None

resume = False

tta_model = {'type': 'SegTTAModel'}

# official multi-scale (0.5-1.75) + flip, used by `vocseg eval --tta`
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
