"""Ablations: which choices matter? (``python -m maskdet ablate``)

Each experiment changes one thing against a shared baseline (the stage-04 settings of the preset)
and is trained and evaluated on the test split for every seed:

``init``          ImageNet weights vs random initialisation
``augmentation``  the default train augmentation vs none
``lr``            learning rate 0.01 vs 0.001
``arch``          ResNet-50 vs ResNet-18
``held_out``      one mask type removed from training (with the twins of those faces); the test
                  masks of that type are then scored against all unmasked test faces and compared
                  with the baseline's score on the same faces
``synthesizer``   trained on one synthesizer's masks, tested on the other's (needs a second
                  DATA_DIR made from the same stage-01 faces with the other backend)
``synthesis``     what makes the training data teach "mask", not "MaskTheFace": the masks as
                  they were (legacy look, MaskTheFace only, no hard negatives), each realism
                  lever added alone (real-photo palette, light-following shading, ear loops,
                  size jitter, both synthesizers mixed, hard negatives), and all together; each
                  arm's DATA_DIR is synthesized from the same stage-01 faces

With a real set (``real_dir``, e.g. ``../shared/realdev``) every run is also evaluated on real
crops (:func:`maskdet.evaluation.evaluate.evaluate_real`), and the table is read by real AUC: synthetic test
AUC cannot see a model that learned the synthesizer's artefacts.

Presets: ``smoke`` (tests: seconds per run), ``small`` (this 2-core CPU: ResNet-18, 3 epochs on
400 images, 3 seeds; under a minute per run, ResNet-50 about two), ``full`` (a GPU: 20 epochs,
3 seeds). Results: ``OUT/ablations.csv`` (one row per run and seed) and
``OUT/ablations_summary.csv`` (mean, standard deviation and count over seeds). Runs already done are
reused, so an interrupted ablation continues where it stopped.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..core.constants import SPLITS
from ..core.manifest import read_manifest, usable, write_manifest
from ..core.progress import bar as progress_bar
from ..synthesis.renderers import resolve_backend
from ..synthesis.synthesis import copy_faces, synthesize_dataset
from ..training.config import ABLATION_PRESETS, TrainConfig
from ..training.train import train
from .evaluate import evaluate_real, evaluate_run

EXPERIMENTS = ("init", "augmentation", "lr", "arch", "held_out", "synthesizer")
HARD_NEGATIVES = 0.3
"""The fraction of faces that get a hard negative when that lever is on."""


def synthesis_arms(backend: str) -> dict[str, dict]:
    """The ``synthesis`` experiment's arms: stage 02 as it was (``backend``'s masks in the
    legacy look, no hard negatives), each lever added alone, and all together. Mixing needs
    both synthesizers, so without a MaskTheFace checkout (``backend`` builtin) it is left out."""
    before = {"backend": backend, "look": "legacy", "hard_negatives": 0.0}
    arms = {
        f"before (legacy look, {backend}, no hard negatives)": before,
        "+ real-photo palette": before | {"look": "legacy,+palette"},
        "+ light-following shading": before | {"look": "legacy,+shading"},
        "+ ear loops": before | {"look": "legacy,+loops"},
        "+ size jitter": before | {"look": "legacy,+jitter"},
        "+ both synthesizers mixed": before | {"backend": "mixed"},
        "+ hard negatives": before | {"hard_negatives": HARD_NEGATIVES},
        "all together": {"backend": "mixed", "look": "real", "hard_negatives": HARD_NEGATIVES},
    }
    if backend == "builtin":
        del arms["+ both synthesizers mixed"]
        arms["all together"]["backend"] = "builtin"
    return arms


TABLE_COLUMNS = [
    "experiment",
    "variant",
    "seed",
    "train_data",
    "test_data",
    "test_auc",
    "test_auc_low",
    "test_auc_high",
    "test_accuracy",
    "test_recall",
    "test_specificity",
    "best_val_auc",
    "held_out_type",
    "held_out_recall",
    "held_out_auc",
    "real_auc",
    "real_auc_low",
    "real_auc_high",
    "real_recall",
    "real_specificity",
    "real_auc_tight",
    "real_auc_loose",
    "synthesis",
    "imagenet_weights",
    "run_dir",
    "status",
]


def held_out_data(data_dir: str | os.PathLike, mask_type: str, out_dir: str | os.PathLike) -> Path:
    """A DATA_DIR view without the train and val masks of ``mask_type`` (and their unmasked twins).

    The images are not copied: the split folders are symbolic links to ``data_dir``; only the
    manifest differs (those rows get status ``excluded``, reason ``held out``).
    """
    src, out = Path(data_dir).resolve(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_manifest(src)
    pairs = {
        r["pair_id"] for r in rows if r["mask_type"] == mask_type and r["split"] in ("train", "val")
    }
    if not pairs:
        raise ValueError(f"no training masks of type {mask_type!r} in {data_dir}")
    for r in rows:
        if r["pair_id"] in pairs and r["split"] in ("train", "val") and r["status"] == "ok":
            r["status"], r["reason"] = "excluded", f"held out: mask type {mask_type}"
    for split in SPLITS:
        link = out / split
        if not link.exists() and (src / split).exists():
            link.symlink_to(src / split, target_is_directory=True)
    write_manifest(out, rows)
    return out


def most_common_mask_type(data_dir: str | os.PathLike) -> str:
    types = Counter(
        r["mask_type"] for r in usable(read_manifest(data_dir), "test") if r["mask_type"]
    )
    if not types:
        raise ValueError(f"{data_dir}: no masked test faces with a mask type")
    return types.most_common(1)[0][0]


def synthesis_arm(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: dict,
    masktheface_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> Path:
    """The DATA_DIR of one ``synthesis`` arm: ``data_dir``'s stage-01 faces (hard links) masked
    with ``settings`` (backend, look, hard_negatives); reused when it was made before."""
    out = Path(out_dir)
    done = out / "synthesis.json"
    if done.exists() and json.loads(done.read_text()).get("settings") == settings:
        return out
    copy_faces(data_dir, out)
    summary = synthesize_dataset(
        out, masktheface_dir=masktheface_dir, workers=workers, progress=False, **settings
    )
    done.write_text(json.dumps({"settings": settings, "summary": summary}, default=str))
    return out


def plan(
    preset: str,
    data_dir: str,
    other_data: str | None,
    experiments=EXPERIMENTS,
    held_out_type: str | None = None,
    masktheface_dir: str | None = None,
) -> list[dict]:
    """The runs to make: experiment, variant, train settings overrides, train and test data."""
    p = ABLATION_PRESETS[preset]
    base_arch = p["arch"]
    other_arch = "resnet18" if base_arch == "resnet50" else "resnet50"
    runs: list[dict] = []

    def add(exp, variant, train_data=data_dir, test_data=None, **over):
        runs.append(
            {
                "experiment": exp,
                "variant": variant,
                "train_data": train_data,
                "test_data": test_data or train_data,
                "over": over,
            }
        )

    add(
        "baseline",
        f"{base_arch}, {'ImageNet' if p['pretrained'] else 'random init'}, aug on, lr 0.01",
    )
    if "init" in experiments:
        add(
            "init", "random init" if p["pretrained"] else "ImageNet", pretrained=not p["pretrained"]
        )
    if "augmentation" in experiments:
        add("augmentation", "no augmentation", aug="none")
    if "lr" in experiments:
        add("lr", "lr 0.001", lr=0.001)
    if "arch" in experiments:
        add("arch", other_arch, arch=other_arch)
    if "held_out" in experiments:
        t = held_out_type or most_common_mask_type(data_dir)
        add("held_out", f"without {t}", held_out=t, test_data=data_dir)
    if "synthesis" in experiments:
        backend, _ = resolve_backend(None, masktheface_dir, verbose=False)
        for variant, settings in synthesis_arms(backend).items():
            runs.append(
                {
                    "experiment": "synthesis",
                    "variant": variant,
                    "train_data": data_dir,
                    "test_data": None,
                    "synthesis": settings,
                    "over": {},
                }
            )
    if "synthesizer" in experiments and other_data:
        add("synthesizer", "train A, test B", test_data=other_data)
        add("synthesizer", "train B, test B", train_data=other_data)
        add("synthesizer", "train B, test A", train_data=other_data, test_data=data_dir)
    return runs


def _run_name(r: dict, seed: int) -> str:
    name = f"{r['experiment']}-{r['variant']}".lower()
    return "".join(c if c.isalnum() else "_" for c in name).strip("_") + f"-s{seed}"


def run_ablations(
    data_dir: str,
    out_dir: str,
    preset: str = "small",
    other_data: str | None = None,
    experiments=EXPERIMENTS,
    seeds: list[int] | None = None,
    held_out_type: str | None = None,
    workers: int | None = None,
    device: str = "auto",
    real_dir: str | None = None,
    masktheface_dir: str | None = None,
) -> list[dict]:
    """Train and evaluate every planned run for every seed (on the test split, and on the real
    set ``real_dir`` when given); write and return the table, best real AUC first."""
    p = ABLATION_PRESETS[preset]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    notes = []
    if "synthesizer" in experiments and not other_data:
        notes.append(
            "synthesizer: skipped (no --other-data: make a second DATA_DIR from the same stage-01 faces "
            "with the other synthesis backend)"
        )
    runs = [
        (r, seed)
        for r in plan(preset, data_dir, other_data, experiments, held_out_type, masktheface_dir)
        for seed in seeds or p["seeds"]
    ]
    bar = progress_bar(total=len(runs), desc="ablation runs", unit="run")  # done of total, the arm
    for r, seed in runs:
        bar.set_postfix_str(_run_name(r, seed))
        bar.update(0)
        run_dir = out / _run_name(r, seed)
        over = dict(r["over"])
        held = over.pop("held_out", None)
        train_data = r["train_data"]
        settings = r.get("synthesis")
        if settings:
            arm = out / ("data_" + _run_name(r, seed).rsplit("-s", 1)[0])
            train_data = str(synthesis_arm(train_data, arm, settings, masktheface_dir, workers))
        if held:
            train_data = str(held_out_data(train_data, held, out / f"data_without_{held}"))
        cfg = TrainConfig(
            data=str(train_data),
            out=str(run_dir),
            epochs=p["epochs"],
            batch_size=p["batch_size"],
            arch=p["arch"],
            pretrained=p["pretrained"],
            limit=p["limit"],
            val_limit=p["val_limit"],
            warmup_epochs=p["warmup_epochs"],
            seed=seed,
            workers=workers,
            device=device,
            wandb="disabled",
            test_preds=False,
        )
        cfg = replace(cfg, **over)
        row = {
            "experiment": r["experiment"],
            "variant": r["variant"],
            "seed": seed,
            "train_data": str(train_data),
            "test_data": r["test_data"],
            "run_dir": str(run_dir),
            "held_out_type": held or "",
            "synthesis": json.dumps(settings) if settings else "",
        }
        try:
            summary = train(cfg)
            res = evaluate_run(
                run_dir,
                "test",
                r["test_data"] or train_data,
                limit=p["val_limit"],
                n_boot=p["n_boot"],
                seed=seed,
                wandb="disabled",
                tensorboard=False,
                device="cpu" if device == "auto" else device,
                workers=workers,
                progress=False,
            )
            real = (
                evaluate_real(
                    run_dir,
                    real_dir,
                    n_boot=p["n_boot"],
                    seed=seed,
                    wandb="disabled",
                    tensorboard=False,
                )
                if real_dir
                else None
            )
        except Exception as err:  # one failed run is recorded, the others go on
            rows.append({**row, "status": f"failed: {type(err).__name__}: {err}"[:300]})
            bar.update()
            continue
        if real:
            row.update(
                real_auc=real["auc"]["auc"],
                real_auc_low=real["auc"]["low"],
                real_auc_high=real["auc"]["high"],
                real_recall=real["at_threshold"]["recall"],
                real_specificity=real["at_threshold"]["specificity"],
                real_auc_tight=real["framings"]["tight"]["auc"],
                real_auc_loose=real["framings"]["loose"]["auc"],
            )
        m = res["at_threshold"]
        row.update(
            test_auc=res["auc"]["auc"],
            test_auc_low=res["auc"]["low"],
            test_auc_high=res["auc"]["high"],
            test_accuracy=m["accuracy"],
            test_recall=m["recall"],
            test_specificity=m["specificity"],
            best_val_auc=summary.get("best_val_auc"),
            imagenet_weights=summary.get("imagenet_weights"),
            status="ok",
        )
        if cfg.pretrained and not summary.get("imagenet_weights"):
            # asked for ImageNet weights but they could not be loaded (offline): say so
            row["variant"] = row["variant"].replace("ImageNet", "random init (no ImageNet)")
        rows.append(row)
        bar.update()
    held_types = {r["held_out_type"] for r in rows if r["held_out_type"]}
    for r in rows:  # the held-out type's faces, scored by every run (baseline vs held out)
        if r.get("status") != "ok" or not held_types:
            continue
        t = next(iter(held_types))
        res = json.loads((Path(r["run_dir"]) / "eval_test.json").read_text())
        g = res.get("groups", {}).get("mask_type", {}).get(t)
        if g and r["experiment"] in ("baseline", "held_out"):
            r.update(
                held_out_type=t, held_out_recall=g["recall"], held_out_auc=g["auc_vs_all_unmasked"]
            )
    bar.close()
    write_table(out / "ablations.csv", rows, TABLE_COLUMNS)
    summ = sorted(summarize(rows), key=lambda s: -float(s.get("real_auc_mean", -1)))
    write_table(out / "ablations_summary.csv", summ, list(summ[0]) if summ else ["experiment"])
    (out / "ablations.json").write_text(
        json.dumps(
            {
                "preset": preset,
                "notes": notes,
                "real_dir": real_dir,
                "runs": rows,
                "summary": summ,
            },
            indent=1,
            default=str,
        )
    )
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Mean, standard deviation (ddof 1) and count over seeds per experiment and variant."""
    keys = (
        "test_auc",
        "test_accuracy",
        "test_recall",
        "test_specificity",
        "best_val_auc",
        "held_out_recall",
        "held_out_auc",
        "real_auc",
        "real_recall",
        "real_specificity",
        "real_auc_tight",
        "real_auc_loose",
    )
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("status") == "ok":
            groups.setdefault((r["experiment"], r["variant"]), []).append(r)
    out = []
    for (exp, var), rs in groups.items():
        s = {"experiment": exp, "variant": var, "seeds": len(rs)}
        for k in keys:
            v = np.array([float(r[k]) for r in rs if r.get(k) not in (None, "")])
            if v.size:
                s[f"{k}_mean"] = round(float(v.mean()), 4)
                s[f"{k}_std"] = round(float(v.std(ddof=1)), 4) if v.size > 1 else ""
        out.append(s)
    return out


def write_table(path: Path, rows: list[dict], columns: list[str]) -> None:
    cols = list(columns) + [k for r in rows for k in r if k not in columns]
    cols = list(dict.fromkeys(cols))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k, "")) for k in cols})


REFERENCE_TABLE = Path(__file__).parents[1] / "reference" / "ablations_stage02_levers.json"
"""The committed reference ablation (``ablations.json`` format plus its ``reference``: date,
machine, command, source), shown where a run has no ablation of its own."""


def table_or_reference(out_dir: str | os.PathLike, reference: Path = REFERENCE_TABLE) -> dict:
    """This run's ablation table (:func:`read_table` of ``out_dir``), else the committed
    reference table, its first note saying that it is a reference and not this run, with its
    date, machine and command."""
    try:
        return read_table(out_dir)
    except FileNotFoundError:
        table = json.loads(Path(reference).read_text(encoding="utf-8"))
    ref = table["reference"]
    table["notes"] = [
        f"REFERENCE, not this run: {Path(out_dir) / 'ablations.json'} does not exist (this preset "
        f"runs no ablation; `python -m maskdet ablate --data DATA_DIR --out {out_dir} --real "
        "REAL_DIR` makes one). Shown instead: " + ref["source"],
        f"measured {ref['date']}, {ref['machine']}: {ref['command']}",
        f"settings: {ref['settings']}",
        *table.get("notes", []),
    ]
    return table


def read_table(out_dir: str | os.PathLike) -> dict:
    """The saved ablation results (``ablations.json``) of ``out_dir``."""
    path = Path(out_dir) / "ablations.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: run `python -m maskdet ablate --data DATA_DIR --out {out_dir}`"
        )
    return json.loads(path.read_text())
