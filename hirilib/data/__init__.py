"""An ImageNet subset for short training runs: decode once, augment on the device.

* ``source``: ``--data imagenette`` reads Imagenette from the Hugging Face Hub's
  parquet export of ``frgfm/imagenette`` (revision ``refs/convert/parquet``, config
  ``160px`` or ``320px``: ``datasets`` >= 4 runs no loading scripts, so the export is
  what there is to read); ``--data PATH`` reads local Parquet files in the same schema
  (an ``image`` column of encoded images and an integer ``label`` column,
  ``PATH/train/*.parquet`` and ``PATH/validation/*.parquet``).  Offline without a local
  copy, one :class:`DataUnavailable` error says so at once and how to point at local
  files.
* ``decode`` and ``cache``: every image is decoded and resized once, to ``size`` x
  ``size`` (shorter side to ``size``, centre crop), into one ``uint8`` tensor per split
  and written to disk atomically, keyed by the source files' content and the size,
  and verified whenever it is read; the next run memory-maps it and starts in seconds.
  Imagenette at 128 px is 0.66 GB, small enough to live on the GPU for the whole run
  (:meth:`ImageData.to`).
* ``augment``: on the device, in batches (:class:`BatchAugment`): random-resized crop
  with per-sample parameters and horizontal flip as one ``affine_grid``/``grid_sample``
  call, Mixup or CutMix (returning the mixing mask and lambda, which EMA distillation
  needs), label smoothing and normalisation.  A 2-CPU Colab machine only indexes
  tensors, so it cannot starve its GPU, and nothing in a batch waits for the device.
"""

from .augment import (
    MEAN,
    STD,
    Batch,
    BatchAugment,
    MixDraw,
    benchmark,
    crop_resize,
    cutmix_box,
    cutmix_mask,
    draw_mix,
    epoch_order,
    eval_images,
    mix_mask,
    normalize,
    rrc_params,
    seed_of,
    seeded_generator,
    smooth_one_hot,
)
from .cache import (
    CACHE_FORMAT,
    ImageData,
    cache_path,
    check_cache_doc,
    default_cache_dir,
    describe_counts,
    fits_on_device,
    load_data,
    read_cache,
    synthetic_data,
)
from .decode import decode_resize, decode_split, progress_bar, subset_indices
from .source import (
    COLUMNS,
    HUB_CONFIGS,
    HUB_REPO,
    HUB_REVISION,
    SPLITS,
    SYNTHETIC_SIZES,
    DataError,
    DataUnavailable,
    Source,
    file_fingerprint,
    find_imagenette,
    hub_source,
    hub_unreachable_message,
    local_source,
    resolve_source,
)
