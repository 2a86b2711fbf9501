# %% [markdown]
# # 01 · Faces: download, crop, split by identity
#
# The first chapter of the report builds the face set that every later stage reads. We use
# **Labeled Faces in the Wild, deep-funneled** (Huang et al., 2007; Huang, Mattar, Lee and
# Learned-Miller, 2012): 13,233 photos of 5,749 people, each already aligned so that the face sits
# in the middle of a 250x250 image. Stage 02 gives every face a masked twin; stage 03 loads them.
#
# What this notebook does, with `maskdet.faces.data`:
#
# 1. **Download** the official archive (checked against its md5; mirrors tried in turn; an
#    interrupted download resumes), or take a local archive or folder when offline.
# 2. **Crop once at one framing and size**: the central 64% of the aligned image (160 of 250 px),
#    stored as a 128x128 PNG. The face then fills the middle of the crop with a margin on every
#    side, so the loader's 112x112 crops (centre or random) always hold the whole face.
# 3. **Split by identity** into train / val / test (80/10/10 of the people, seeded and the same on
#    every re-run): nobody appears in two splits, so validation measures faces the model never saw.
# 4. Write `DATA_DIR/manifest.csv`, which accounts for every input image, used or not.

# %%
import pandas as pd

from maskdet import pipeline
from maskdet.core import checks, download
from maskdet.faces import data, figures

# %% tags=["parameters"]
PRESET = "auto"  # 01: "full" on a CUDA GPU, else "demo"; 02-06: what 01 used; or "demo" | "full"
SOURCE = "lfw"  # "lfw" | "celeba" | "gdrive:<id or url>" | a local .tgz/.zip/folder
DATA_DIR = None  # demo: "data/demo", full: "data/full"
LIMIT_IDENTITIES = None  # people to keep (0: all 5,749); demo: 1500, full: 0
SEED = 0
WORKERS = 2  # worker processes (default in code: the machine's cores)

# %% [markdown]
# ## Download and crop
#
# Offline (as on the course's build machines) point `SOURCE` at a local copy, e.g.
# `../shared/data/lfw-deepfunneled.tgz`. Every download goes through one table of URLs and
# checksums in `maskdet.core.download`:

# %%
pd.DataFrame(
    [
        {
            "key": k,
            "file": r.filename,
            "md5": r.md5 or f"sha256 per file: {r.index}",
            "from": ", ".join(r.urls) or f"Google Drive {r.gdrive_id}",
        }
        for k, r in download.DOWNLOADS.items()
    ]
)

# %%
result = data.download_and_prepare(
    SOURCE, DATA_DIR, seed=SEED, limit_identities=LIMIT_IDENTITIES or None, workers=WORKERS
)
pipeline.record_preset(DATA_DIR, PRESET)  # chapters 02-06 with PRESET "auto" follow it
pd.Series(result, dtype=object).to_frame("stage 01")

# %% [markdown]
# Every input image is accounted for: `images_in = written + skipped`, and each skipped image keeps
# its row in the manifest with the reason (unreadable, not an image, too small, ...).

# %%
assert result["images_in"] == result["written"] + result["skipped"]
rows = checks.check_stage01(DATA_DIR)
pd.DataFrame(rows).query("status != 'ok'")[["source", "status", "reason"]].head(20)

# %% [markdown]
# ## Framing
#
# Top: the aligned source images with the region we keep (green). Bottom: the stored 128x128 crops
# with the loader's 112x112 centre crop (orange). The margin between them is room for the random
# crops and small rotations of the training augmentation.

# %%
fig = figures.framing_figure(DATA_DIR, n=6)

# %% [markdown]
# ## Identity split
#
# Identities are ordered by a seeded hash and cut 80/10/10, so the split does not depend on the
# order files come in, and a re-run gives the same split. LFW is very unbalanced (one person has
# 530 photos, most have one), so image counts per split differ from 80/10/10 while people follow it.

# %%
data.check_identity_disjoint(rows)  # raises if anyone crosses splits
data.split_table(rows)

# %%
pd.DataFrame(rows).head()

# %% [markdown]
# Next: **02_mask_synthesis** gives each of these faces a masked twin in the same split.
