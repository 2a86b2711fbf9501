# %% [markdown]
# # 03 · The data loader: augmented 112x112 batches
#
# Stage 02 left pairs of 128x128 face crops: every face and its masked twin, in identity-disjoint
# train / val / test splits, listed in `DATA_DIR/manifest.csv`. This chapter turns them into what
# the network eats: **batches of 64 normalised 112x112 RGB tensors with a 0/1 label**
# (`wearing_mask` = 1).
#
# The goal is a model that recognises *real* masks on *real* photos, not the synthesizer's
# artefacts. Training augmentations therefore change everything except "is there a mask":
#
# | augmentation | why |
# | --- | --- |
# | random resized crop (55-100% of the area, aspect 0.85-1.18) to 112 | faces at other scales and positions |
# | horizontal flip, rotation up to 10 degrees | pose |
# | colour jitter (brightness, contrast, saturation, hue) | lighting, camera colour |
# | Gaussian blur, low resolution (down to 28-72 px and back), JPEG quality 30-90 | real photos are soft, small and compressed; synthetic masks are pasted sharp and lossless, and a model must not key on that |
#
# Validation and test use one deterministic view: resize to 128, centre crop 112. All inputs are
# normalised with the ImageNet mean and standard deviation (what the pretrained ResNet-50 expects).

# %%
from IPython.display import display

from maskdet.bench.loader import bench_loader
from maskdet.core import checks
from maskdet.core.constants import CLASS_NAMES
from maskdet.core.system import resolve_device
from maskdet.loading import augment, figures, loader, walkthrough

# %% tags=["parameters"]
PRESET = "auto"  # 01: "full" on a CUDA GPU, else "demo"; 02-06: what 01 used; or "demo" | "full"
DATA_DIR = None  # demo: "data/demo", full: "data/full"
BATCH_SIZE = None  # images per step; demo: 32, full: 64
LOADER = "cached"  # "cached" (decode once, augment whole batches on the device) or "dataloader"
AUG = "default"  # augmentation preset: default | light | none
WORKERS = 2  # worker processes (default in code: the machine's cores)
# timed batches per setting in the speed tables (0 skips 04's)
BENCH_BATCHES = None  # demo: 5, full: 20
SEED = 0

# %%
counts = checks.check_stage02(DATA_DIR)  # stops with the stage to run first if data are missing
display(counts)

# %% [markdown]
# ## The transforms
#
# The two pipelines as `torchvision.transforms.v2` builds them from the `AUG` preset, printed from
# the objects the loader uses (`maskdet.loading.augment.train_transform` and `eval_transform`): random
# rotation, a random resized crop to 112x112 (scaling and shifting the face), a horizontal flip,
# colour jitter, then low resolution, blur and JPEG each with some probability, and the ImageNet
# normalisation.

# %%
train_tf = augment.train_transform(AUG)
eval_tf = augment.eval_transform()
print("train:", train_tf)
print("val/test:", eval_tf)

# %% [markdown]
# ## The `Dataset`
#
# `FaceDataset` (a `torch.utils.data.Dataset`) lists the manifest's usable rows (status `ok`) of
# one split; indexing it reads one PNG and applies the transform. A file that cannot be read
# (missing, truncated, not an image) does not crash a batch: the dataset returns a `Skipped`
# record, the collate function drops it, and the loader counts it with its reason
# (`loader.skips`). Its code, and one sample:

# %%
walkthrough.show_source(loader.FaceDataset.__getitem__)
train_ds = loader.FaceDataset(DATA_DIR, "train", transform=train_tf, seed=SEED)
image, label, index = train_ds[0]
print(f"{len(train_ds)} train images; sample 0: {train_ds.items[index].path}")
print("image", tuple(image.shape), image.dtype, "label", label, CLASS_NAMES[label])

# %% [markdown]
# ## The `DataLoader`
#
# `FaceLoader` wraps `torch.utils.data.DataLoader`: shuffled batches from `WORKERS` worker
# processes, the skip-aware collate function, pinned memory and a non-blocking copy to the
# device on a GPU. A batch is `images` of shape `(B, 3, 112, 112)` (float32, channels first:
# colour, height, width), `labels` of shape `(B,)` (float 0/1, what `BCEWithLogitsLoss` wants)
# and the dataset `indices` (so predictions can be traced back to files). This is
# `LOADER = "dataloader"`.

# %%
walkthrough.show_source(loader.FaceLoader.__iter__)
device = resolve_device()
train_dl = loader.FaceLoader(
    train_ds, BATCH_SIZE, shuffle=True, workers=WORKERS, device=device, seed=SEED
)
(batch,) = loader.first_batches(train_dl)
print("images", tuple(batch.images.shape), batch.images.dtype, batch.images.device)
print("labels", tuple(batch.labels.shape), batch.labels[:12].tolist())
fig = walkthrough.batch_grid(batch, title="one DataLoader batch (train augmentation)")

# %% [markdown]
# ## The fast option beside it: the cached loader
#
# `LOADER = "cached"` (the default for training) yields batches of the same kind, augmented by
# the same family of transforms, without decoding a PNG per image per epoch (see the section on
# the two loaders below). `make_loaders` builds either kind for every split:

# %%
loaders = loader.make_loaders(
    DATA_DIR, BATCH_SIZE, mode=LOADER, aug=AUG, workers=WORKERS, device=device, seed=SEED
)
for split, ld in loaders.items():
    print(f"{split:5s}: {len(loader.loader_items(ld)):5d} images, {len(ld):4d} batches")
(batch,) = loader.first_batches(loaders["train"])
print("images", tuple(batch.images.shape), batch.images.dtype, batch.images.device)
print("labels", tuple(batch.labels.shape), batch.labels[:12].tolist())
low, high = round(batch.images.min().item(), 2), round(batch.images.max().item(), 2)
print("value range after ImageNet normalisation:", low, high)
print("skipped images:", dict(loaders["train"].skips.counts))

# %% [markdown]
# ## What the network sees
#
# Top rows: masked faces, bottom rows: their unmasked twins; the first row of each class is the
# val/test view, the others are random training views of the same faces.

# %%
fig = figures.augmented_grid(DATA_DIR, n_per_class=8, aug=AUG, mode="cached", seed=SEED, repeats=2)

# %% [markdown]
# ## CPU, GPU and the two loaders
#
# Where tensors live matters. The model sits on `device` (`cuda` on a Colab GPU, else `cpu`), and
# every batch must be moved there. Two settings make that copy cheap: `pin_memory=True` puts the
# batch in page-locked host memory, which the GPU can read by DMA, and `.to(device,
# non_blocking=True)` lets the copy overlap with the GPU's work on the previous batch. Both only
# matter on CUDA; the loaders set them automatically.
#
# **`dataloader`** is the textbook path: a `torch.utils.data.Dataset` and a `DataLoader` whose
# worker processes (sized to the machine's cores; Colab has 2) each read a PNG, decode it and
# augment it image by image with `torchvision.transforms.v2`.
#
# **`cached`** is the fast option beside it: each image is decoded once into a memory-mapped
# `uint8` cache under `DATA_DIR/cache`, and whole batches are augmented at once (on the GPU when
# there is one, else with OpenCV's SIMD kernels), with the same augmentation family and random
# parameters seeded by (seed, epoch, batch). How it works (the GPU kernel, the side CUDA stream,
# JPEG as tensor maths, the CPU path) is in the README's
# [engineering note on the cached loader](https://github.com/maskdet/mask-detection#engineering-note-the-cached-loader).
# Select one with `LOADER`.

# %%
res = bench_loader(data=DATA_DIR, batches=BENCH_BATCHES, device=str(device))

# %% [markdown]
# The table above is this run's, on this machine: a plain `torchvision.datasets.ImageFolder`
# with PIL transforms as the baseline, the `dataloader` path and the `cached` path, side by side
# and taken in turns (the median of the rounds). The speed-up depends on the cores and on how
# busy they are, so it differs from machine to machine and from run to run. For reference, not
# this run: on the project's shared 2-core CPU the cached path gave 4,850-5,440 augmented
# images/s against 465-510 for the baseline, 10.0-10.7x (measured 2026-11-26, 2-core AMD EPYC
# CPU shared with other jobs, `python -m maskdet bench loader`).
#
# On a GPU the cached path augments on the device and stops being the bottleneck: it gave
# 13,430-20,638 images/s against 1,729-3,046 for the baseline with 8 workers (measured
# 2026-11-26, a lent NVIDIA H200 with 16 CPU cores, `python -m maskdet bench loader`), and
# `python -m maskdet bench train` (in 04) shows how much of the model's own speed the whole
# pipeline keeps.
#
# Next: **04_train_resnet50** trains on these batches.
