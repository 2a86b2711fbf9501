# %% [markdown]
# # 04 · Training ResNet-50
#
# We train a **ResNet-50** (He et al., 2016) to output one number per face: the logit of
# "wearing a mask", starting from ImageNet weights when they can be downloaded (fine-tuning, as on
# Colab) and from random initialisation when they cannot (the training output says which). The loss is `BCEWithLogitsLoss` (sigmoid and binary cross-entropy in one
# numerically stable step). Defaults follow the assignment: **50 epochs, batch 64, learning rate
# 0.01**, SGD with Nesterov momentum 0.9 (AdamW selectable), a linear warm-up over the first epochs
# and a cosine decay afterwards. On a GPU the step runs in mixed precision (bf16 where supported,
# else fp16 with a gradient scaler) with `channels_last` memory layout.
#
# Every epoch produces **one metrics dict** (train loss and accuracy, val loss, accuracy and ROC
# AUC, learning rate, images/s, the share of time spent waiting for data) that goes to every sink:
# a CSV/JSONL file in the run folder, TensorBoard and Weights & Biases (online with an API key,
# offline without, never prompting). Validation predictions of every epoch are saved for stage 05.

# %%
import pandas as pd
from IPython.display import display

from maskdet import pipeline
from maskdet.bench.train import bench_train
from maskdet.core import checks
from maskdet.core import model as mdl
from maskdet.core.checkpoint import load_checkpoint, load_model, save_checkpoint
from maskdet.core.inference import epoch_predictions_path, read_predictions
from maskdet.evaluation import evalsets
from maskdet.loading import walkthrough
from maskdet.loading.loader import first_batches
from maskdet.training import figures, tbread
from maskdet.training.config import TrainConfig
from maskdet.training.estimate import estimate_training_time
from maskdet.training.run_setup import probe_run
from maskdet.training.sinks import read_metrics
from maskdet.training.train import make_criterion, save_epoch, train, train_step

# %% tags=["parameters"]
PRESET = "auto"  # 01: "full" on a CUDA GPU, else "demo"; 02-06: what 01 used; or "demo" | "full"
DATA_DIR = None  # demo: "data/demo", full: "data/full"
RUN_DIR = None  # demo: "runs/demo", full: "runs/full"
EPOCHS = None  # demo: 3, full: 50
BATCH_SIZE = None  # images per step; demo: 32, full: 64
LR = 0.01
OPTIMIZER = "sgd"  # sgd or adamw (AdamW usually wants a learning rate near 1e-3)
WARMUP_EPOCHS = None  # demo: 0.5, full: 2.0
ARCH = "resnet50"  # resnet18 for quick ablations
PRETRAINED = True  # ImageNet weights when they can be downloaded (Colab); random init otherwise
# 0: every image, else at most LIMIT images per split (whole twin pairs)
LIMIT = None  # demo: 4000, full: 0
# 0: every val/test image, else at most this many (whole twin pairs)
VAL_LIMIT = None  # demo: 300, full: 0
LOADER = "cached"  # "cached" (decode once, augment whole batches on the device) or "dataloader"
WORKERS = 2  # worker processes (default in code: the machine's cores)
CPU_BF16 = True  # bf16 training steps on a CPU with AVX512-BF16/AMX (ignored elsewhere)
WANDB = "auto"  # auto: online with an API key, offline without; "disabled" turns it off
SEED = 0
REAL_DIR = "auto"  # auto: ../shared/realdev, else built from its source; or a folder of real crops
# real crops per class measured after every epoch (0: all)
REAL_VAL_LIMIT = None  # demo: 150, full: 0
# timed batches per setting in the speed tables (0 skips 04's)
BENCH_BATCHES = None  # demo: 5, full: 20
BENCH_COMPILE = False  # True adds the torch.compile settings on a GPU (minutes of compiling)
DEVICE = "auto"  # "auto" (CUDA when present) | "cpu" | "cuda"; PRESET "auto" follows it
FRESH = False  # True: train from the start (RUN_DIR's checkpoints removed); False: resume

# %%
counts = checks.check_stage02(DATA_DIR)  # stops with the stage to run first if data are missing
display(counts)

# %% [markdown]
# ## The network: ResNet-50
#
# ResNet-50 stacks 16 **bottleneck blocks** in four stages after a stem. A bottleneck block squeezes
# the channels with a 1x1 convolution, works at that width with a 3x3 convolution, and expands them
# again with a 1x1 convolution (4x wider); its input is **added** to its output (the residual
# shortcut), so each block learns a correction and gradients flow straight through the sum even in
# a deep network. The first block of each stage halves the resolution (stride 2) and widens the
# channels, with a 1x1 projection on the shortcut (bold boxes below). After the last stage, global
# average pooling turns the 2048 feature maps into one vector and the ImageNet classifier (1000
# classes) is replaced by a single output: our logit.
#
# The diagram and the table below are drawn from the model itself: forward hooks record the output
# shape of every block on a real 112x112 input. At 112x112 (instead of ImageNet's 224) the last
# stage works on 4x4 maps, a quarter of the compute, plenty for a face crop.

# %%
net, _ = mdl.build_model(ARCH, pretrained=False, verbose=False)
fig = mdl.draw_architecture(net, title=ARCH)  # at the 112x112 input
print(mdl.format_table(mdl.architecture_table(net)))

# %% [markdown]
# The network is torchvision's own `resnet50`; `build_model` loads its ImageNet weights when it
# can and replaces the 1000-class classifier `fc` by a new one-logit head. Its code, and the head
# of the model built above:

# %%
walkthrough.show_source(mdl.build_model)
print("head:", net.fc)

# %% [markdown]
# ## Training
#
# `train` resumes by itself: if `RUN_DIR/last.pt` exists (model, optimizer, scheduler, gradient
# scaler, epoch and RNG states), it continues after the last finished epoch and ends with the same
# weights as an uninterrupted run. On Colab, keep `RUN_DIR` on Google Drive (the setup cell does)
# and simply re-run this notebook after a disconnect. `best.pt` holds the weights with the best
# val AUC plus what inference needs: architecture, input size, normalisation, class names and a
# decision threshold chosen on val. Both load with `torch.load(..., weights_only=True)`.
#
# After every epoch the model is also measured on real faces (`REAL_DIR`, `REAL_VAL_LIMIT` crops
# per class): `real/auc`, `real/recall` and `real/specificity` stand beside the val numbers in
# the metrics (CSV, TensorBoard, WandB). They are never used to choose the checkpoint or the
# threshold (both come from the synthetic val split), so they stay an honest estimate of how the
# model does on real masks. That per-epoch `real/auc` is a quick check on a sample (at most
# `REAL_VAL_LIMIT` crops per class, the last epoch's weights); chapter 05 measures the best
# checkpoint on every crop of `REAL_DIR` and prints how many, and that is the real AUC to quote.
# The two differ by the sample and by the epoch.
#
# The same run from a terminal: `python -m maskdet train --data DATA_DIR --out RUN_DIR --epochs 50
# --real-val ../shared/realdev`.
#
# `REAL_DIR = "auto"` is `../shared/realdev` where it sits beside the checkout. Elsewhere (Colab)
# the same crops are built from their source: the photos of the public GitHub repository
# jolignier/face-mask-dataset-ilc-2021 at a fixed commit (a students' face-mask project, boxed in
# Pascal VOC), fetched once through the download table (checksum per photo, resumable, mirrors in
# `MASKDET_REAL_MIRRORS`) and cut as realdev was cut (`python -m maskdet realset`; the cell below
# prints how many crops match realdev pixel for pixel). No licence is stated upstream: the photos
# keep their owners' rights, so they are used for evaluation inside the project only and never
# redistributed; each user fetches them from the source. Unreachable, one line says so and the
# chapter goes on without real-face numbers.

# %%
REAL_DIR = evalsets.real_dir(REAL_DIR)  # ../shared/realdev, else data/realdev built from source

# %%
pipeline.show_tensorboard(f"{RUN_DIR}/tb")  # Colab: inside the notebook, live while training

# %%
cfg = TrainConfig(
    data=DATA_DIR,
    out=RUN_DIR,
    epochs=EPOCHS,
    batch_size=BATCH_SIZE,
    lr=LR,
    optimizer=OPTIMIZER,
    warmup_epochs=WARMUP_EPOCHS,
    arch=ARCH,
    pretrained=PRETRAINED,
    limit=LIMIT or None,
    val_limit=VAL_LIMIT or None,
    loader=LOADER,
    workers=WORKERS,
    cpu_bf16=CPU_BF16,
    wandb=WANDB,
    seed=SEED,
    real_val=checks.real_set_or_none(REAL_DIR),
    real_val_limit=REAL_VAL_LIMIT or None,
    device=DEVICE,
    resume=not FRESH,
)
print(f"{cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr}, {cfg.arch} on {DEVICE}")

# %% [markdown]
# ## The loss, the optimizer and one training step
#
# Before the run, one real step of the training loop on a real batch, with the run's settings on
# a throw-away copy of the model (`probe_run`: random initialisation, nothing written to
# `RUN_DIR`): the loss is `BCEWithLogitsLoss`, the optimizer SGD with the config's learning rate
# (its `initial_lr`; the warm-up starts it lower), momentum and weight decay. `train_step` is the
# function every step of `train` calls: the batch moves to the device, the forward pass gives one
# logit per face, the loss is back-propagated and the optimizer steps.

# %%
probe = probe_run(cfg)
crit = make_criterion()
print("loss:", crit)
print("optimizer:", probe.opt)
walkthrough.show_source(train_step)

# %%
(batch,) = first_batches(probe.loaders["train"])
head_before = probe.model.fc.weight.detach().clone()
loss, logits = train_step(probe, batch, crit)
print(f"one step on {len(batch.labels)} images ({tuple(batch.images.shape)}) on {probe.device}")
print(f"loss {loss.item():.4f}; first logits {[round(v, 3) for v in logits[:4].tolist()]}")
print(f"head weights moved by up to {(probe.model.fc.weight - head_before).abs().max().item():.2e}")

# %% [markdown]
# Before the run, a short timed warm-up (a few real training steps on a throw-away copy of the
# model, after the images are cached) estimates how long it will take.

# %%
estimate = estimate_training_time(cfg, run=probe)
del probe, batch, logits  # the throw-away run: its model and loaders go before training

# %% [markdown]
# Re-running this cell (or the notebook) resumes the run in `RUN_DIR` after its last finished
# epoch and says so (which epoch of how many, from which checkpoint); `FRESH = True` in the
# parameters trains it from the start instead.
#
# WandB logs online when it finds an API key: `WANDB_API_KEY` in the environment, `wandb login`,
# or on Colab a Secret named `WANDB_API_KEY` (the key icon in the left bar, with this notebook
# given access); it then prints the run's URL. Without a key it logs offline into
# `RUN_DIR/wandb` and prints, once, the `wandb sync` command that uploads it later.

# %%
summary = train(cfg)
{k: v for k, v in summary.items() if k != "last"}

# %% [markdown]
# ## Learning curves
#
# From `RUN_DIR/metrics.csv`, the file every run writes (the same numbers TensorBoard and WandB
# show). A growing gap between train and val loss is overfitting; `data wait` near 0 means the GPU
# (or CPU) never waited for the loader.

# %%
metrics = read_metrics(RUN_DIR)
fig = figures.training_curves(metrics)
pd.DataFrame(metrics).round(4).tail(10)

# %% [markdown]
# ## TensorBoard
#
# The same run as TensorBoard logged it: the scalars below are read back from the event files in
# `RUN_DIR/tb` with TensorBoard's own reader (live in the notebook on Colab, with the cell above
# the training).

# %%
fig = tbread.scalars_figure(f"{RUN_DIR}/tb")

# %%
last = metrics[-1]["epoch"]
preds = read_predictions(epoch_predictions_path(RUN_DIR, last))
fig = figures.roc_figure(preds["label"], preds["prob"], f"val ROC, epoch {last}")
ckpt = load_checkpoint(f"{RUN_DIR}/best.pt")
print({k: ckpt[k] for k in ("arch", "epoch", "image_size", "class_names", "threshold", "val_auc")})

# %% [markdown]
# ## Saving and loading
#
# As in PyTorch's tutorial on saving and loading: the checkpoint holds `model.state_dict()` (with
# the optimizer's and the scheduler's in `last.pt`), written by `torch.save`, and a model is
# rebuilt with `model.load_state_dict(torch.load(path, weights_only=True))`. These are the
# functions `train` and stages 05-06 call:

# %%
walkthrough.show_source(save_epoch, save_checkpoint, load_model)
best, meta = load_model(f"{RUN_DIR}/best.pt")
print(
    f"best.pt loaded: {type(best).__name__}, epoch {meta['epoch']}, threshold {meta['threshold']:.3f}"
)

# %% [markdown]
# ## Several GPUs: the same training under `torchrun`
#
# One Colab GPU is enough for LFW. For all of CelebA (about 200,000 faces) or the ablations with
# several seeds, run the same command on a machine with N GPUs through PyTorch's launcher:
#
# ```bash
# torchrun --nproc_per_node 4 -m maskdet train --data DATA_DIR --out RUN_DIR --epochs 50
# ```
#
# Each of the N processes (ranks) drives one GPU and trains a `DistributedDataParallel` copy of
# the model. `--batch-size` and `--lr` keep their meaning (64 and 0.01 by default): 64 is the
# **global** batch, each rank takes its part of every batch of the cached loader, with the
# augmentation the single-process run would draw, so the run sees the same batches whatever N
# is. `--sync-bn` computes BatchNorm over the global batch (worth it when each rank gets only a
# few images). Rank 0 alone writes checkpoints, metrics, TensorBoard and WandB; the val
# predictions of all ranks are gathered before the AUC. The checkpoints are those of a single
# process: they resume under any N, or without `torchrun`. If one rank dies, `torchrun` stops the
# others and the job ends with a message (`--dist-timeout` bounds a silent rank); re-running the
# same command resumes after the last finished epoch. Several machines: the same command with
# `--nnodes`, `--node_rank` and `--rdzv_endpoint`, and `RUN_DIR` on a file system they share.

# %% [markdown]
# ## Speed: does the data pipeline keep up?
#
# The same step timed two ways, in turns: the **model alone** (one batch reused, the ceiling) and
# the **full pipeline** (cached loader, augmentation, step on real batches). Their ratio says how
# much of the model's speed the data path costs. At 112x112 and batch 64 a ResNet-50 step is tiny
# for a large GPU, so there both the model and the augmentation are limited by how fast the CPU can
# launch GPU work: the loader prepares its batches in a background thread (see 03) so that this
# launching overlaps with the model's. The table below is this run's. For reference, not this
# run: with the training default (channels_last + AMP) the full pipeline kept 87-96% of the
# model-only speed, 73-82% without the background thread; fp32 and `torch.compile` kept 76-84%,
# and CUDA graphs, which make the model itself 3x faster (13,177 images/s), 66%: then the
# loader's own kernel launches are the limit (measured 2026-11-26, a lent NVIDIA H200 with 16 CPU cores,
# `bash tools/gpu_check.sh DATA_DIR`, which runs `python -m maskdet bench train`).
#
# On a CPU the model dominates and the ratio is about 1.

# %%
if BENCH_BATCHES:
    speed = bench_train(
        data=DATA_DIR,
        batches=BENCH_BATCHES,
        arch=ARCH,
        batch_size=BATCH_SIZE,
        rounds=1,
        compile=BENCH_COMPILE,
    )

# %% [markdown]
# Stage 05 (**05_eval_roc**) draws the ROC curve of every epoch from `RUN_DIR/preds/` and evaluates
# the best checkpoint on the test split; stage 06 looks at real photos.
