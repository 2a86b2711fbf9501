# %% [markdown]
# # 05 · Evaluation: ROC every epoch, the test split
#
# This chapter of the report measures the classifier trained in stage 04, with `maskdet.evaluation.evaluate`:
#
# 1. **ROC curves of every epoch**, overlaid, and the validation AUC against the epoch, recomputed
#    from the validation predictions that training saved after each epoch (`RUN_DIR/preds/`).
# 2. **The test split with the best checkpoint** (`best.pt`, chosen by val AUC): ROC and AUC with a
#    bootstrap 95% interval, the precision-recall curve and average precision, accuracy /
#    precision / recall / F1 at 0.5 and at the threshold chosen on val, the true positive rate at 1%
#    and 5% false positive rate, the confusion matrix, results per mask type and per colour, and
#    the most confident mistakes.
# 3. **Real masks on real faces**, side by side with the synthetic test split: the same numbers on
#    real crops that no model here was trained on (`REAL_DIR`), per framing as well. The test split
#    comes from the same synthesizer as training, so a model that learned the synthesizer's
#    artefacts scores AUC 1.0 there and still misses real masks: the real number is the one that
#    says how a kiosk would do.
#
# Everything is saved in the run folder (`eval_test.json`, `eval_test/*.png`) and logged to
# TensorBoard and WandB. The same from a terminal: `python -m maskdet evaluate --run RUN_DIR`.
#
# Label convention: **wearing_mask = 1** (the positive class), not_wearing_mask = 0. "Recall" is
# the share of masked faces found; a "false positive" is an unmasked face called masked.

# %%
import pandas as pd
from IPython.display import display

from maskdet.core import checks
from maskdet.deploy import photos
from maskdet.evaluation import ablate, evalsets, evaluate, figures
from maskdet.evaluation.worn import worn_table

# %% tags=["parameters"]
PRESET = "auto"  # 01: "full" on a CUDA GPU, else "demo"; 02-06: what 01 used; or "demo" | "full"
DATA_DIR = None  # demo: "data/demo", full: "data/full"
RUN_DIR = None  # demo: "runs/demo", full: "runs/full"
SPLIT = "test"
# 0: every val/test image, else at most this many (whole twin pairs)
VAL_LIMIT = None  # demo: 300, full: 0
N_BOOT = 1000  # bootstrap resamples for the AUC interval
REAL_DIR = "auto"  # auto: ../shared/realdev, else built from its source; or a folder of real crops
REAL_LIMIT = 0  # 0: every real crop, else at most this many per class
# where `python -m maskdet ablate --out` wrote its tables
ABLATIONS_DIR = None  # demo: "runs/demo/ablations", full: "runs/full/ablations"
WANDB = "auto"  # auto: online with an API key, offline without; "disabled" turns it off
WORKERS = 2  # worker processes (default in code: the machine's cores)
SEED = 0

# %%
checks.check_stage04(RUN_DIR)  # stops with the stage to run first if there is no best.pt

# %% [markdown]
# ## ROC curve of every epoch
#
# One curve per epoch on the validation split (colour = epoch). A model that ranks at chance
# draws the diagonal, a perfect one runs through the top-left corner; where this run's curves
# start and how fast they get there is in the AUC row under the figure (with ImageNet weights, or
# on an easy synthetic split, the first epoch can already be far from the diagonal). The AUC is
# the area under each curve: the probability that a randomly chosen masked face gets a higher
# score than a randomly chosen unmasked one (1.0 = perfect ranking, 0.5 = chance).

# %%
epochs = evaluate.epoch_predictions(RUN_DIR)
aucs = evaluate.epoch_aucs(epochs)
fig = figures.epoch_panels(epochs, aucs)
pd.Series(aucs, name="val AUC").rename_axis("epoch").to_frame().T.round(4)

# %% [markdown]
# ## The test split
#
# The test split holds people that training and model selection never saw (the split is by
# identity, and a face and its masked twin are always in the same split). How the numbers are made:
#
# - **Threshold.** A classifier outputs a probability; a decision needs a threshold. Besides the
#   default 0.5 we report the threshold chosen on the **validation** split at training time
#   (maximum of Youden's J = TPR - FPR, which weighs both kinds of error equally). It is never
#   tuned on test.
# - **Bootstrap interval.** The test set is a sample; the 95% interval of the AUC comes from 1,000
#   resamples (seeded, so it is the same on every run). It resamples *people*, not images, because
#   a masked face and its unmasked twin (and several photos of one person) are not independent.
# - **TPR at a fixed FPR.** For a kiosk the false alarm rate matters: the share of masked faces
#   recognised when at most 1% (5%) of unmasked faces are wrongly called masked.

# %%
result = evaluate.evaluate_run(
    RUN_DIR,
    SPLIT,
    DATA_DIR,
    limit=VAL_LIMIT or None,
    n_boot=N_BOOT,
    seed=SEED,
    wandb=WANDB,
    workers=WORKERS,
)
choice = result["threshold_choice"]
print(
    f"{result['n']} {SPLIT} faces ({result['n_pos']} masked, {result['n_neg']} unmasked), "
    f"best epoch {result['best_epoch']}; threshold {choice['threshold']:.3f} ({choice['method']})"
)
pd.Series(evaluate.headline(result)).round(4).to_frame(SPLIT)

# %%
fig = figures.evaluation_panels(result, SPLIT)

# %% [markdown]
# ## Per mask type and colour
#
# Each row takes the masked faces of one type (or colour) against *all* unmasked faces of the
# split: how many of them are recognised at the val threshold (recall) and how well they are
# ranked (AUC). A type with a clearly lower recall is one the model has not learned to generalise
# to; the `ablate` experiment "mask type held out" tests exactly that.

# %%
for name in ("mask_type", "mask_color"):
    display(pd.DataFrame(result["groups"][name]).T.sort_values("recall").round(3))
fig = figures.group_panels(result)

# %% [markdown]
# ## The most confident mistakes
#
# The test faces the model got wrong with the highest confidence (red title: the true class and
# the model's probability of a mask); the line under the gallery counts what it holds in this
# run. Failures of this kind of model, when there are any, tend to be masks whose colour is close
# to skin, thin or partial masks, faces turned sideways, and (false positives) unmasked faces with
# a beard, a hand or a microphone over the mouth; a well-trained run may have few mistakes, or
# none of one kind.

# %%
photos.show_jpeg(
    figures.mistakes_gallery(
        result["mistakes"], result["data_dir"], title=f"{SPLIT}: most confident mistakes"
    )
)

# %%
missed = sum(m["label"] == 1 for m in result["mistakes"])  # what this run's gallery holds
print(
    f"gallery: {missed} masked faces called unmasked, {len(result['mistakes']) - missed} "
    f"unmasked faces called masked (the most confident of all {SPLIT} mistakes)"
)

# %% [markdown]
# ## Real masks on real faces
#
# `REAL_DIR` holds real crops of people with and without real masks, cut from web photos at 1.5x
# the face box: `../shared/realdev` beside the checkout, else (Colab) the same crops built from the
# photos of jolignier/face-mask-dataset-ilc-2021 at a fixed commit (chapter 04 built them; no
# licence is stated upstream: evaluation inside the project only, never redistributed), or a
# folder of your own with `mask/` and `nomask/`. Nothing is tuned on them: the checkpoint and the threshold were
# chosen on the synthetic val split, so these numbers are an honest estimate. The bootstrap
# resamples whole source photos (faces of one photo are not independent). **Framings**: the same
# faces cut tighter (1.0x and 1.25x the box, like a kiosk's detector crop) and looser (2.0x, with
# the border continued, like a phone photo), because a kiosk sees both.

# %%
REAL_DIR = evalsets.real_dir(REAL_DIR)  # ../shared/realdev, else data/realdev built from source
real = evaluate.evaluate_real_if_present(
    RUN_DIR, REAL_DIR, n_boot=N_BOOT, seed=SEED, wandb=WANDB, limit=REAL_LIMIT or None
)
if real:
    display(
        pd.DataFrame(
            evaluate.side_by_side({f"synthetic {SPLIT}": result, "real faces": real})
        ).round(4)
    )
    display(pd.DataFrame(real["framings"]).T.round(4))
    fig = figures.real_panels(result, real)

# %%
# the real AUC to quote: the best checkpoint on every crop (04's per-epoch check: a sample)
if real:
    auc = real["auc"]
    print(
        f"real AUC {auc['auc']:.3f} [{auc['low']:.3f}, {auc['high']:.3f}] on {real['n']} real "
        f"crops of {REAL_DIR} ({real['n_pos']} masked; REAL_LIMIT = {REAL_LIMIT}, 0: every crop), "
        f"best checkpoint; 04's per-epoch real/auc used at most REAL_VAL_LIMIT crops per class"
    )

# %% [markdown]
# ## Masks worn wrong
#
# `REAL_DIR/worn/` holds real faces that wear a mask the wrong way, each looked at and given a
# category (its `labels.csv`): `nose_out` (the mouth covered, the nose out), `chin` (the mask
# below the mouth) and `other_wrong`. They count in neither class of the ROC above. **What is
# measured here is the binary model on them**: per category, the share it calls wearing_mask at
# the val threshold (at a door, those people walk in), and the AUC of its p(mask) separating the
# proper masks of `mask/` from them (1.0: every proper mask above every worn-wrong face, 0.5: no
# separation; 95% interval over source photos). **What is not measured yet**: a worn-wrong
# answer. The model has no third class, so nothing here says how well it would *recognise* a mask
# worn wrong. The gallery shows the crops of each category with the highest p(mask) (red: called
# mask on). The numbers are in `RUN_DIR/eval_real_worn.csv` and `eval_real.json` (`worn_wrong`).

# %%
worn = real.get("worn_wrong") if real else None
if worn:
    print(worn_table(worn))
    fig = figures.worn_gallery(worn)
else:
    print("no readable worn/ crops in REAL_DIR: no worn-wrong numbers in this run")

# %% [markdown]
# The error analysis of the real misses (by mask colour, brightness, face size and framing) is in
# chapter 06, next to the real photos.

# %% [markdown]
# ## Where the numbers are
#
# `RUN_DIR/eval_test.json` holds every number above (and the curves' points); the figures are in
# `RUN_DIR/eval_test/`. TensorBoard shows them under the `test/` tags next to the training curves;
# WandB has a run named `<run>-eval-test`.

# %%
{"json": f"{RUN_DIR}/eval_{SPLIT}.json", **result["figures"]} | (
    {"real json": f"{RUN_DIR}/eval_real.json"} if real else {}
)

# %% [markdown]
# ## Ablations: which choices matter?
#
# `python -m maskdet ablate --data DATA_DIR --out ABLATIONS_DIR --preset small` (CPU, minutes per
# run) or `--preset full` (GPU: 20 epochs, 3 seeds) trains one variant per line against a shared
# baseline and evaluates each on the test split: ImageNet vs random initialisation; augmentation on
# vs off; learning rate 0.01 vs 0.001; ResNet-50 vs ResNet-18; one mask type held out of training
# (its test masks scored against all unmasked faces, next to the baseline's score on the same
# faces); and, with `--other-data`, training on MaskTheFace masks and testing on the builtin
# renderer's (and the reverse); and `--experiments synthesis` (stage 02 as it was, each realism
# lever of stage 02 added alone, and all together: one DATA_DIR per arm from the same faces).
# With `--real REAL_DIR` every run is also scored on the real faces and **the table is read by
# real AUC**: it is the number that says which choice helps (a synthetic test split cannot see a
# model that learned the synthesizer's artefacts). With several seeds the table shows mean and
# standard deviation.
# Read a difference as real only when it is larger than the spread over seeds and the bootstrap
# interval of the AUC. (`imagenet_weights` False means the ImageNet weights could not be loaded:
# offline machines train from random initialisation in both arms of that comparison.)
#
# The presets' budget has no room for an ablation (each arm is a training run), so unless
# `ABLATIONS_DIR` holds one, the cell shows the committed **reference** table
# (`maskdet/reference/ablations_stage02_levers.json`, the stage 02 levers read by real AUC); its
# first lines say that it is not this run, and when, on what machine and with which command it
# was measured.

# %%
abl = ablate.table_or_reference(ABLATIONS_DIR)  # this run's ablation, else the reference
for note in abl["notes"]:
    print(note)
cols = [
    "experiment",
    "variant",
    "seeds",
    "real_auc_mean",
    "real_auc_std",
    "real_recall_mean",
    "real_specificity_mean",
    "real_auc_tight_mean",
    "real_auc_1.25x_mean",
    "real_auc_loose_mean",
    "test_auc_mean",
    "test_auc_std",
    "test_accuracy_mean",
    "test_recall_mean",
    "test_specificity_mean",
    "held_out_recall_mean",
    "held_out_auc_mean",
]
summ = pd.DataFrame(abl["summary"])
display(summ[[c for c in cols if c in summ]])
fig = figures.summary_figure(abl)
runs = pd.DataFrame(abl["runs"])
cols = [
    "experiment",
    "variant",
    "seed",
    "real_auc",
    "test_auc",
    "test_auc_low",
    "test_auc_high",
]
display(runs[[c for c in (*cols, "imagenet_weights", "status") if c in runs]])
