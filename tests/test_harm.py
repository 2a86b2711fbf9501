"""Nothing lost, nothing harmed (issue 22): outputs that name an input or a file the project did
not make, stage 01 on a folder it did not make, manifest values used as paths, special files,
huge archive members and decodes, names that are not UTF-8, damaged checkpoints, one class,
and the weak cases' words. Real lfw-mini faces and real (random-init) models throughout; every
case checks that the user's files are unchanged, under a timeout, memory bounded where a read
could grow."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from PIL import Image

from maskdet.__main__ import main
from maskdet.core import archive, guard
from maskdet.core.checkpoint import (
    DIGEST_KEY,
    CheckpointError,
    checkpoint_meta,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from maskdet.core.manifest import read_manifest, write_manifest
from maskdet.core.model import build_model
from maskdet.deploy import clips
from maskdet.faces import data
from maskdet.synthesis.synthesis import copy_faces
from maskdet.training.config import TrainConfig

from .conftest import QUALITATIVE, ROOT

NOT_UTF8 = os.fsdecode(b"caf\xe9_0001.jpg")  # an old camera card's Latin-1 name
ACCENTED = "José_García_0001.jpg"


# ----------------------------------------------------------------------------- helpers


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging) when the block takes longer than ``seconds``."""

    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s: it hangs")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: its sha256 (files), or its kind (links, FIFOs, folders)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = os.fsencode(p.relative_to(folder)).decode("utf-8", "backslashreplace")
        if p.is_symlink():
            out[rel] = f"link:{os.readlink(p)}"
        elif p.is_fifo():
            out[rel] = "fifo"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and "Traceback" not in err, err
    return lines[-1]


def faces(lfw_tree: Path, n: int) -> list[Path]:
    return sorted(lfw_tree.rglob("*.jpg"))[:n]


@pytest.fixture
def photos(tmp_path, lfw_tree) -> Path:
    """7 real face photos, two of them with names an ASCII locale or UTF-8 cannot take."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, src in enumerate(faces(lfw_tree, 5)):
        shutil.copyfile(src, folder / f"face_{i}.jpg")
    src = faces(lfw_tree, 7)
    shutil.copyfile(src[5], folder / ACCENTED)
    shutil.copyfile(src[6], os.path.join(folder, NOT_UTF8))
    return folder


def predict_cli(*args: str) -> int:
    return main(["predict", "--detector", "yunet", *args])


# ------------------------------------------------------- outputs never harm an input


def test_predict_out_naming_an_input_is_refused_and_the_photo_kept(
    tmp_path, photos, real_checkpoint, capsys
):
    photo = photos / "face_0.jpg"
    (tmp_path / "link.csv").symlink_to(photo)
    os.link(photo, tmp_path / "hard.csv")
    before = snapshot(tmp_path)
    for out, inputs in [
        (photo, [photo]),  # predict --out photo.jpg photo.jpg
        (tmp_path / "link.csv", [photo]),  # a symbolic link to it
        (tmp_path / "hard.csv", [photo]),  # a hard link: the same inode
        (photos / "preds.csv", [photos]),  # inside the input folder
        (real_checkpoint, [photo]),  # the checkpoint is an input too
    ]:
        rc = predict_cli("--checkpoint", str(real_checkpoint), "--out", str(out), *map(str, inputs))
        assert rc == 2
        line = error_line(capsys)
        assert "--out" in line and ("is the input" in line or "inside the input" in line), line
    assert snapshot(tmp_path) == before


def test_predict_never_overwrites_a_file_it_did_not_make(tmp_path, photos, real_checkpoint, capsys):
    notes = tmp_path / "notes.csv"
    notes.write_text("my own notes\n")
    before = snapshot(tmp_path)
    rc = predict_cli("--checkpoint", str(real_checkpoint), "--out", str(notes), str(photos))
    assert rc == 2 and "--overwrite" in error_line(capsys)
    assert snapshot(tmp_path) == before
    # a file predict wrote is replaced by the next run; another is replaced with --overwrite
    out = tmp_path / "out" / "preds.csv"
    with deadline(240):
        for args in (
            ["--out", str(out)],
            ["--out", str(out)],
            ["--out", str(notes), "--overwrite"],
        ):
            assert predict_cli("--checkpoint", str(real_checkpoint), *args, str(photos)) == 0
    capsys.readouterr()
    assert notes.read_text().startswith("path,face,")
    assert len(out.read_text().splitlines()) == 1 + 7
    # nothing beside the outputs but their record; no temporary file left
    assert sorted(p.name for p in out.parent.iterdir()) == [guard.OUTPUTS_RECORD, "preds.csv"]
    assert not list(tmp_path.glob(".*.part*"))


def test_a_second_run_writing_the_same_output_at_once_is_refused(
    tmp_path, photos, real_checkpoint, capsys
):
    out = tmp_path / "preds.csv"
    with guard.writing(out) as part:  # another run, still writing
        part.write_text("path,face\nsomeone else's row\n")
        rc = predict_cli("--checkpoint", str(real_checkpoint), "--out", str(out), str(photos))
        assert rc == 1 and "being written by another run" in error_line(capsys)
    assert out.read_text() == "path,face\nsomeone else's row\n"  # the first run's rows, whole


@pytest.fixture
def clip(tmp_path) -> Path:
    frames = clips.clip_from_photos([QUALITATIVE / "masked_11.jpg"], frames=4)
    return clips.write_video(tmp_path / "clip.mp4", frames)


def test_kiosk_out_or_log_naming_its_video_is_refused(tmp_path, clip, real_checkpoint, capsys):
    before = snapshot(tmp_path)
    for extra in (["--out", str(clip)], ["--log", str(clip)], ["--log", str(real_checkpoint)]):
        rc = main(["kiosk", "--video", str(clip), "--model", str(real_checkpoint), *extra])
        assert rc == 2 and "is the input" in error_line(capsys)
    mine = tmp_path / "holiday.mp4"
    shutil.copyfile(clip, mine)
    rc = main(["kiosk", "--video", str(clip), "--model", str(real_checkpoint), "--out", str(mine)])
    assert rc == 2 and "--overwrite" in error_line(capsys)
    assert snapshot(tmp_path) == before | {"holiday.mp4": before["clip.mp4"]}


def test_kiosk_writes_through_a_temporary_name_and_may_rewrite_its_own(
    tmp_path, clip, real_checkpoint, capsys
):
    out, log = tmp_path / "out" / "annotated.mp4", tmp_path / "out" / "log.jsonl"
    args = ["kiosk", "--video", str(clip), "--model", str(real_checkpoint), "--out", str(out)]
    with deadline(240):
        assert main([*args, "--log", str(log)]) == 0
        assert main([*args, "--log", str(log)]) == 0  # its own files: replaced
    capsys.readouterr()
    assert out.stat().st_size > 0 and log.read_text().count('"summary"') == 1
    assert sorted(p.name for p in out.parent.iterdir()) == [
        guard.OUTPUTS_RECORD,
        "annotated.mp4",
        "log.jsonl",
    ]


def test_kiosk_refuses_a_fifo_as_video_without_hanging(tmp_path, real_checkpoint, capsys):
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    with deadline(60):
        rc = main(["kiosk", "--video", str(fifo), "--model", str(real_checkpoint), "--log", ""])
    assert rc == 1 and "not a regular file (a FIFO)" in error_line(capsys)


def test_export_refuses_a_folder_holding_a_model_it_did_not_make(tmp_path, real_checkpoint, capsys):
    out = tmp_path / "export"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"my own model, made elsewhere")
    before = snapshot(tmp_path)
    assert main(["export", "--checkpoint", str(real_checkpoint), "--out", str(out)]) == 2
    line = error_line(capsys)
    assert "model.onnx already exists and was not written by maskdet" in line, line
    assert "--overwrite" in line and snapshot(tmp_path) == before


# ---------------------------------------------------------- stage 01 owns its folder


def test_stage01_refuses_a_folder_it_did_not_make_and_deletes_nothing(tmp_path, lfw_mini, capsys):
    project = tmp_path / "my_project"
    for split in ("train", "val", "test"):
        (project / split).mkdir(parents=True)
        (project / split / "my_face.jpg").write_bytes(b"someone's own photo")
    (project / "manifest.csv").write_text("path,split,label\nsomething,else,entirely\n")
    before = snapshot(tmp_path)
    rc = main(["download", "--source", str(lfw_mini), "--out", str(project)])
    assert rc == 2
    line = error_line(capsys)
    assert "did not make" in line and "manifest.csv" in line, line
    assert snapshot(tmp_path) == before


def test_stage01_takes_an_empty_folder_and_reruns_into_its_own(tmp_path, lfw_mini, capsys):
    out = tmp_path / "data"
    out.mkdir()
    for _ in range(2):  # the second run finds its own record: kept
        data.download_and_prepare(str(lfw_mini), out, limit_identities=6, progress=False)
    assert "kept" in capsys.readouterr().out
    assert (out / guard.DATA_DIR_MARK).exists() and read_manifest(out)


def test_synthesize_out_refuses_a_folder_it_did_not_make(tmp_path, small_faces):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("years of work")
    with pytest.raises(guard.OutputRefused, match="did not make"):
        copy_faces(small_faces, other)
    assert sorted(p.name for p in other.iterdir()) == ["thesis.tex"]


# ------------------------------------------------------------- manifests, checked


def copy_data(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("raw", ".maskdet.lock"))
    return dest


def test_an_absolute_manifest_path_is_refused_and_the_file_it_names_kept(
    tmp_path, small_faces, capsys
):
    victim = tmp_path / "elsewhere" / "precious.png"
    victim.parent.mkdir()
    victim.write_bytes(b"not yours to delete")
    work = copy_data(small_faces, tmp_path / "data")
    rows = read_manifest(work)
    rows[3]["path"] = str(victim)
    write_manifest(work, rows)
    line_no = 1 + 1 + next(i for i, r in enumerate(read_rows(work)) if r["path"] == str(victim))
    rc = main(
        ["synthesize", "--data", str(work), "--out", str(tmp_path / "new"), "--backend", "builtin"]
    )
    assert rc == 1
    line = error_line(capsys)
    assert f"row {line_no}, column path" in line and "not relative" in line, line
    rc = main(["train", "--data", str(work), "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert rc == 1 and f"row {line_no}, column path" in error_line(capsys)
    assert victim.read_bytes() == b"not yours to delete"
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob("run/*.pt"))


def read_rows(folder: Path) -> list[dict[str, str]]:
    import csv

    with open(folder / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------- files are stat-checked


def cap_memory(gigabytes: int):
    """A ``preexec_fn`` capping a child's address space (torch alone maps about 5 GB)."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_AS, (gigabytes << 30,) * 2)


def test_predict_records_special_files_and_goes_on(tmp_path, photos, real_checkpoint):
    (photos / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(photos / "pipe.jpg")
    out = tmp_path / "preds.csv"
    run = subprocess.run(  # memory capped: reading /dev/zero whole would never end
        [sys.executable, "-m", "maskdet", "predict", "--checkpoint", str(real_checkpoint)]
        + ["--out", str(out), str(photos)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,  # a FIFO opened for reading would block for ever
        preexec_fn=cap_memory(8),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = out.read_text(encoding="utf-8").splitlines()[1:]
    assert len(rows) == 9  # 7 photos and the two special files, each with its reason
    special = [r for r in rows if r.split(",")[0].endswith(("zero.jpg", "pipe.jpg"))]
    assert len(special) == 2 and all("not a regular file" in r for r in special), special


MEMORY_LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]) << 20,) * 2)
from maskdet.core.imageio import BadImage, read_rgb
try:
    read_rgb(sys.argv[1])
    print("decoded")
except BadImage as err:
    print("refused:", err)
"""


def read_memory_limited(path: Path, limit_mb: int = 1500) -> str:
    """``read_rgb(path)`` in a process whose address space is capped at ``limit_mb``."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-c", MEMORY_LIMITED, str(path), str(limit_mb)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip()


def test_a_link_to_dev_zero_is_refused_unread_in_bounded_memory(tmp_path):
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    assert read_memory_limited(tmp_path / "zero.jpg").startswith(
        "refused: not a regular file (a character device)"
    )


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA"])
def test_huge_png_with_transparency_is_refused_in_bounded_memory(tmp_path, mode):
    path = tmp_path / f"huge_{mode}.png"
    size = (8900, 8900)
    if mode == "P":
        Image.new("P", size, 0).save(path, transparency=0)
    else:
        Image.new(mode, size).save(path)
    assert path.stat().st_size < 2_000_000  # a small file, whose decode would take GBs
    result = read_memory_limited(path)
    assert result.startswith("refused: too large to decode"), result


def test_a_photo_decoded_within_the_limit_stays_within_it(tmp_path):
    """The limit is the measured peak: a 5000x5000 RGBA PNG (estimated 350 MB) decodes in a
    process capped a little above the baseline plus that."""
    path = tmp_path / "rgba.png"
    Image.new("RGBA", (5000, 5000), (10, 20, 30, 128)).save(path)
    assert read_memory_limited(path, 1500) == "decoded"


def test_stage01_from_a_folder_with_a_fifo_skips_it_with_its_reason(tmp_path, lfw_tree):
    src = tmp_path / "src"
    for person in sorted(lfw_tree.iterdir())[:4]:
        shutil.copytree(person, src / person.name)
    os.mkfifo(src / sorted(lfw_tree.iterdir())[0].name / "stuck_0099.jpg")
    with deadline(240):
        data.download_and_prepare(str(src), tmp_path / "data", workers=1, progress=False)
    rows = read_manifest(tmp_path / "data")
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert [r["reason"] for r in skipped] == ["not a regular file (a FIFO): not read"]


# ------------------------------------------------------------ archives, checked first


def tar_with(tmp_path: Path, name: str, extra: tarfile.TarInfo, payload: bytes = b"") -> Path:
    """A .tgz of a real face and the member ``extra``, written header by header (``payload``:
    its data as stored, which may be less than its stated size)."""
    face = sorted(QUALITATIVE.glob("*.jpg"))[0]
    blocks = b""
    for info, body in (
        (tarfile.TarInfo("lfw/A/A_0001.jpg"), face.read_bytes()),
        (extra, payload),
    ):
        if info.size == 0 and body:
            info.size = len(body)
        blocks += info.tobuf(format=tarfile.GNU_FORMAT) + body
        blocks += b"\0" * (-len(body) % tarfile.BLOCKSIZE)
    path = tmp_path / name
    path.write_bytes(gzip.compress(blocks + b"\0" * (2 * tarfile.BLOCKSIZE)))
    return path


def member(name: str, kind: bytes, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, linkname
    return info


@pytest.mark.parametrize(
    "name,kind,link,words",
    [
        ("lfw/A/passwd", tarfile.LNKTYPE, "/etc/passwd", "hard link to /etc/passwd"),
        ("lfw/A/zero.jpg", tarfile.SYMTYPE, "/dev/zero", "symbolic link to /dev/zero"),
        ("lfw/A/dev", tarfile.CHRTYPE, "", "a device"),
        ("lfw/A/pipe.jpg", tarfile.FIFOTYPE, "", "a FIFO"),
        ("../escape.jpg", tarfile.REGTYPE, "", "outside the archive's folder"),
    ],
)
def test_unsafe_archive_members_are_refused_as_unsafe_before_extraction(
    tmp_path, name, kind, link, words
):
    bad = tar_with(tmp_path, "bad.tgz", member(name, kind, linkname=link))
    dest = tmp_path / "raw" / "bad_extracted"
    with pytest.raises(archive.ArchiveError) as err:
        archive.extract(bad, dest)
    assert "unsafe archive member" in str(err.value) and words in str(err.value), err.value
    assert "anew" not in str(err.value)
    assert not dest.exists() and not (tmp_path / "escape.jpg").exists()


def test_a_member_of_2_gib_is_refused_from_its_header(tmp_path, capsys):
    bomb = tar_with(tmp_path, "bomb.tgz", member("lfw/A/A_0001.jpg", tarfile.REGTYPE, 2 << 30))
    assert bomb.stat().st_size < 100_000
    out = tmp_path / "data"
    with deadline(60):
        rc = main(["download", "--source", str(bomb), "--out", str(out)])
    assert rc == 1
    line = error_line(capsys)
    assert "2048 MB" in line and "limit" in line, line
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) < 1000  # nothing extracted


def test_a_cut_zip_is_called_a_cut_zip(tmp_path, lfw_tree):
    whole = tmp_path / "faces.zip"
    with zipfile.ZipFile(whole, "w") as zf:
        for face in faces(lfw_tree, 6):
            zf.write(face, f"lfw/{face.parent.name}/{face.name}")
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(archive.ArchiveError, match="a .zip cut short or damaged.*anew"):
        archive.extract(cut, tmp_path / "raw" / "cut_extracted")
    assert not (tmp_path / "raw" / "cut_extracted").exists()


# ------------------------------------------------------------- names pass through


def test_predict_keeps_every_row_whatever_the_names(tmp_path, photos, real_checkpoint, capsys):
    out = tmp_path / "preds.csv"
    with deadline(240):
        rc = predict_cli("--checkpoint", str(real_checkpoint), "--out", str(out), str(photos))
    assert rc == 0
    printed = capsys.readouterr().out
    assert '"images": 7' in printed
    text = out.read_text(encoding="utf-8")  # valid UTF-8, the odd byte escaped
    names = [line.split(",")[0].rsplit("/", 1)[-1] for line in text.splitlines()[1:]]
    assert len(names) == 7 and ACCENTED in names and "caf\\xe9_0001.jpg" in names
    # the same in a plain ASCII locale (cron, some containers): the same rows, byte for byte
    ascii_out = tmp_path / "ascii.csv"
    run = subprocess.run(
        [sys.executable, "-m", "maskdet", "predict", "--checkpoint", str(real_checkpoint)]
        + ["--out", str(ascii_out), str(photos)],
        cwd=ROOT,
        capture_output=True,
        env=ascii_locale(),
        timeout=240,
    )
    assert run.returncode == 0, run.stderr.decode("utf-8", "replace")[-2000:]
    assert ascii_out.read_text(encoding="utf-8") == text


STAGE01_ASCII = [sys.executable, "-m", "maskdet", "download", "--workers", "1"]


def ascii_locale() -> dict[str, str]:
    """A process in a plain ASCII locale (cron, some containers): no UTF-8 mode, no coercion."""
    return dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")


def test_stage01_from_a_folder_and_a_tar_with_odd_names_in_an_ascii_locale(tmp_path, lfw_tree):
    src = tmp_path / "src"
    people = sorted(lfw_tree.iterdir())[:4]
    for person in people:
        shutil.copytree(person, src / person.name)
    odd = [os.fsencode(src / "José_García"), os.fsencode(src) + b"/Ren\xe9"]
    for folder, face in zip(odd, faces(lfw_tree, 2)):
        os.mkdir(folder)
        shutil.copyfile(face, folder + b"/" + os.path.basename(folder) + b"_0001.jpg")
    tar = tmp_path / "odd.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(src, "lfw")
    for source, out in ((src, tmp_path / "from_folder"), (tar, tmp_path / "from_tar")):
        run = subprocess.run(
            [*STAGE01_ASCII, "--source", str(source), "--out", str(out)],
            cwd=ROOT,
            capture_output=True,
            env=ascii_locale(),
            timeout=240,
        )
        assert run.returncode == 0, run.stderr.decode("utf-8", "replace")[-2000:]
        rows = read_manifest(out)
        ids = {r["identity"] for r in rows if r["status"] == "ok"}
        assert {"José_García", "Ren\\xe9"} <= ids and len(ids) == 6, ids


# ----------------------------------------------------------- checkpoints, checked


def flip_inside_a_weight(path: Path, n: int = 4096) -> None:
    """Flip ``n`` bytes in the middle of the largest tensor record of a torch zip file."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    raw[start : start + n] = bytes(b ^ 0xFF for b in raw[start : start + n])
    path.write_bytes(bytes(raw))


def test_bit_rot_inside_a_weight_is_refused(tmp_path, real_checkpoint, photos, capsys):
    damaged = tmp_path / "best.pt"
    shutil.copyfile(real_checkpoint, damaged)
    flip_inside_a_weight(damaged)
    assert torch.load(damaged, weights_only=True)  # it still loads as a file ...
    with pytest.raises(CheckpointError, match="do not match the digest"):
        load_checkpoint(damaged)  # ... but its weights are refused
    out = tmp_path / "preds.csv"
    rc = predict_cli("--checkpoint", str(damaged), "--out", str(out), str(photos))
    assert rc == 1 and "digest" in error_line(capsys) and not out.exists()


def tiny_checkpoint(path: Path, arch: str = "resnet18", **extra) -> dict:
    torch.manual_seed(0)
    model, _ = build_model("resnet18", pretrained=False, verbose=False)
    payload = checkpoint_meta(arch, 0.5, vars(TrainConfig(arch="resnet18")))
    return payload | {"model": model.state_dict()} | extra


def test_non_finite_weights_are_refused(tmp_path):
    payload = tiny_checkpoint(tmp_path)
    payload["model"]["fc.weight"][0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", payload)
    with pytest.raises(CheckpointError, match="fc.weight holds NaN or infinite"):
        load_checkpoint(tmp_path / "nan.pt")


def test_a_checkpoint_without_digest_loads_with_a_notice(tmp_path, capsys):
    payload = tiny_checkpoint(tmp_path)
    torch.save(payload, tmp_path / "old.pt")  # as saved before digests
    model, meta = load_model(tmp_path / "old.pt")
    err = capsys.readouterr().err
    assert (
        DIGEST_KEY not in meta and len(err.strip().splitlines()) == 1 and "no weights digest" in err
    )


def test_a_wrong_architecture_says_what_does_not_fit(tmp_path):
    save_checkpoint(tmp_path / "r18.pt", tiny_checkpoint(tmp_path, arch="resnet50"))
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "r18.pt")
    text = str(err.value)
    assert "missing (layer1.0.conv3.weight" in text and "of another shape (" in text, text
    assert "\n" not in text and "train a model first" in text


# -------------------------------------------------------------- both classes


def test_training_on_one_class_is_refused_naming_the_split(tmp_path, masked_mini, capsys):
    work = copy_data(masked_mini, tmp_path / "data")
    rows = [
        r
        for r in read_manifest(work)
        if not (r["split"] == "train" and r["label"] == "wearing_mask")
    ]
    write_manifest(work, rows)
    unmasked = sum(r["split"] == "train" and r["status"] == "ok" for r in rows)
    rc = main(["train", "--data", str(work), "--out", str(tmp_path / "run"), "--wandb", "disabled"])
    line = error_line(capsys)
    assert rc == 1 and f"the train split has {unmasked} not_wearing_mask, 0 wearing_mask" in line
    assert not list(tmp_path.glob("run/*.pt"))


# ---------------------------------------------------------------- weak cases


@pytest.mark.parametrize(
    "argv,option",
    [
        (["kiosk", "--video", "v.mp4", "--model", "m.onnx", "--max-frames", "-5"], "--max-frames"),
        (["predict", "--checkpoint", "x.pt", "--threshold", "nan", "a.jpg"], "--threshold"),
        (["predict", "--checkpoint", "x.pt", "--threshold", "7", "a.jpg"], "--threshold"),
        (["predict", "--checkpoint", "x.pt", "--threshold", "-1", "a.jpg"], "--threshold"),
        (["ablate", "--data", "d", "--seeds", "a,b"], "--seeds"),
    ],
)
def test_bad_option_values_are_usage_errors_naming_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and f"argument {option}" in capsys.readouterr().err


def test_run_of_a_stage_with_no_notebook_names_the_stages(capsys):
    assert main(["run", "--stages", "07"]) == 2
    line = error_line(capsys)
    assert "no notebook for stage 07" in line and "04_train_resnet50" in line, line


def test_run_of_stage_04_on_a_fresh_clone_says_run_stage_01_first(tmp_path, capsys):
    with deadline(300):
        rc = main(
            [
                "run",
                "--stages",
                "04",
                "--data",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "nb"),
            ]
        )
    line = error_line(capsys)
    assert rc == 1 and "04_train_resnet50 stopped:" in line and "run stage 01 first" in line, line
    assert line.endswith("shows the traceback)") and "PapermillExecutionError" not in line  # whole


WANDB_INIT = """
from maskdet.training.sinks import WandbSink
sink = WandbSink(__import__("sys").argv[1], {"lr": 0.1}, "auto")
print(sink.mode)
sink.run.finish()
"""


def test_a_garbage_wandb_key_without_network_goes_offline_with_one_line(tmp_path):
    env = dict(
        os.environ,
        WANDB_API_KEY="x" * 40,
        WANDB_BASE_URL="http://127.0.0.1:9",  # nothing listens: no network
    )
    env.pop("WANDB_MODE", None)
    run = subprocess.run(
        [sys.executable, "-c", WANDB_INIT, str(tmp_path / "run")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,  # it used to stall about 70 s
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    assert lines[-1] == "offline" and "cannot be reached" in lines[0] and len(lines) == 2, lines


def test_train_out_refuses_a_folder_of_the_users_own_files(tmp_path, small_faces, capsys):
    """The folder check of stage 01 and synthesize --out holds for train --out too: a folder
    holding files that no run made is refused before anything is written, its files unchanged;
    an older run folder (its last.pt, no mark) and a new folder are the run's."""
    from maskdet.training.train import RUN_RECORDS, train

    mine = tmp_path / "my_project"
    mine.mkdir()
    (mine / "metrics.csv").write_text("my own numbers")
    args = ["train", "--data", str(small_faces), "--out", str(mine), "--epochs", "1"]
    assert main(args + ["--wandb", "disabled"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did not make" in err[0] and "metrics.csv" in err[0]
    assert sorted(p.name for p in mine.iterdir()) == ["metrics.csv"]
    assert (mine / "metrics.csv").read_text() == "my own numbers"
    with pytest.raises(guard.OutputRefused):
        train(TrainConfig(data=str(small_faces), out=str(mine), epochs=1, wandb="disabled"))
    older = tmp_path / "older_run"
    older.mkdir()
    (older / "last.pt").write_bytes(b"")  # a run folder of an older version: accepted
    guard.claim_folder(older, RUN_RECORDS, "train")
    new = tmp_path / "runs" / "new"
    guard.claim_folder(new, RUN_RECORDS, "train")
    assert (new / guard.DATA_DIR_MARK).is_file()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_real_set_labels_csv_that_is_a_fifo_or_a_device_is_named_not_read(tmp_path):
    from maskdet.core.real import read_real_set

    fifo_set = tmp_path / "fifo_set"
    fifo_set.mkdir()
    os.mkfifo(fifo_set / "labels.csv")
    with deadline(20), pytest.raises(ValueError, match="labels.csv.*not a regular file"):
        read_real_set(fifo_set)
    dev_set = tmp_path / "dev_set" / "worn"
    dev_set.mkdir(parents=True)
    for sub in ("mask", "nomask"):
        (dev_set.parent / sub).mkdir()
    (dev_set / "labels.csv").symlink_to("/dev/zero")
    with deadline(20), pytest.raises(ValueError, match="labels.csv.*not a regular file"):
        read_real_set(dev_set.parent, worn=True)
