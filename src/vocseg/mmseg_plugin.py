"""Imported by configs vocseg writes (``custom_imports``): applies the stack fixes in any process,
so mmseg's own ``tools/train.py`` and ``tools/test.py`` can run vocseg configs as they are.

It stays at the top of the package, under this name, because every config vocseg has written names
`vocseg.mmseg_plugin`, and run folders keep their config: moving it would break every existing run."""

from vocseg.stack.compat import ensure_stack, fix_class_weight_loss

ensure_stack()
fix_class_weight_loss()  # mmseg 1.2.2's class_weight + ignore index 255 (docs/stack.md)

# Registering vocseg's MMEngine components (each module registers its own on import).
import vocseg.data.batches  # noqa: E402,F401  (VocsegFastSegDataPreProcessor)
import vocseg.data.loading  # noqa: E402,F401  (VocsegVOCDataset, VocsegLoadImageFromFile, VocsegLoadAnnotations)
import vocseg.data.transforms  # noqa: E402,F401  (VocsegRandomResizeCrop, VocsegRandomCrop, VocsegRandomFlip, VocsegPhotoMetricDistortion, VocsegPackSegInputs)
import vocseg.evaluation.metric  # noqa: E402,F401  (VocsegPerClassIoUMetric)
import vocseg.stack.speed  # noqa: E402,F401  (mixed precision, channels_last)
import vocseg.training.batch_guard  # noqa: E402,F401  (VocsegBatchGuardHook)
import vocseg.training.checkpoint_hook  # noqa: E402,F401  (VocsegCheckpointHook)
import vocseg.training.health  # noqa: E402,F401  (VocsegHealthHook)
import vocseg.training.loop  # noqa: E402,F401  (VocsegResumableIterLoop)
import vocseg.training.progress  # noqa: E402,F401  (VocsegProgressHook)
import vocseg.training.rng  # noqa: E402,F401  (VocsegRngStateHook)
import vocseg.training.sampler  # noqa: E402,F401  (VocsegResumableSampler, VocsegSeededDataset)
import vocseg.training.trackers  # noqa: E402,F401  (VocsegTensorboardVisBackend, ..., VocsegTrackerHook)
