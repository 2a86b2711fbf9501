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

from maskdet import augment, checks, figures, loader, walkthrough
from maskdet.bench.loader import bench_loader
from maskdet.constants import CLASS_NAMES
from maskdet.system import resolve_device

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
# the objects the loader uses (`maskdet.augment.train_transform` and `eval_transform`): random
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
# **`dataloader`** is the textbook path: worker processes (sized to the machine's cores; Colab has
# 2) each read a PNG, decode it and augment it image by image with `torchvision.transforms.v2`.
#
# **`cached`** is the fast path. Each image is decoded once into one `uint8` array of shape
# `(N, 128, 128, 3)`, memory-mapped from `DATA_DIR/cache` (1.3 GB for all of LFW with masks), and
# reused by every epoch. The random parameters of every batch (crop, flip, rotation, colour, which
# images get low resolution, blur or JPEG, and how much) are drawn on the CPU from a generator seeded
# by (seed, epoch, batch), so an epoch is the same whether or not training was interrupted before
# it, and the same on a CPU and a GPU. Two kernels apply them:
#
# - **On a GPU** the whole split's cache is copied to GPU memory once (a quarter of the free memory
#   at most; else each batch is gathered into pinned memory), and a batch is augmented there as
#   **one operation per step for the whole batch**: one `grid_sample` for crop + flip + rotation, one
#   batched 3x3 colour matrix, down-up resampling, a grouped-convolution blur and JPEG written as
#   tensor maths (`loader.jpeg_compress`: colour conversion, 4:2:0 chroma, the quantised 8x8 DCT of
#   all luma and chroma blocks as one 64x64 matrix product, libjpeg's tables; it matches OpenCV's
#   codec to half a grey level). Nothing in that path waits for the GPU: the parameters, blur taps
#   and JPEG tables are computed on the CPU and travel in one pinned copy, constants are made once,
#   and there is no `.item()`. So a background thread prepares the next batches on a side CUDA
#   stream while the model trains on the current one; the training stream waits on an event, not
#   the host. At 112x112 the GPU's arithmetic is nearly free, and the cost is the host's time to
#   launch each operation (about 40 per pass); the thread therefore augments **8 batches in one
#   pass** (each with its own parameters), about 7 launches per batch.
# - **On a CPU** the same parameters are applied with OpenCV's SIMD `uint8` kernels, much faster
#   there than float tensor maths: each image is read in place from the memory-mapped cache (no
#   gather copy), warped once as RGBA (OpenCV's 4-channel warp is twice as fast as its 3-channel
#   one) and colour-mapped; two threads each take half of the batch (OpenCV releases the GIL
#   inside every call), and the whole batch is normalised by one per-channel lookup table.
#
# Same augmentation family, selectable with `LOADER`.

# %%
res = bench_loader(data=DATA_DIR, batches=BENCH_BATCHES, device=str(device))

# %% [markdown]
# The numbers come from one run on this machine, side by side and taken in turns (the median of
# the rounds): a plain `torchvision.datasets.ImageFolder` with PIL transforms as the baseline, the
# `dataloader` path and the `cached` path. On the project's shared 2-core CPU the cached path gave
# about 4,850-5,440 augmented images/s against 465-510 for the baseline (10.0-10.7x). On a lent NVIDIA
# H200 (16 CPU cores) the cached path augmented 13,000-21,000 images/s on the GPU against
# 1,700-3,000 for the baseline with 8 workers: there the loader stops being the bottleneck, and
# `python -m maskdet bench train` (in 04) shows how much of the model's own speed the whole
# pipeline keeps.
#
# Next: **04_train_resnet50** trains on these batches.
