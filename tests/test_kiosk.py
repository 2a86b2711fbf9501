"""The kiosk on short videos built here from real photos (no video file is committed): tracks,
decisions and the log, bad sources, and batched against one-face classification.

The classifier (``onnx_model``) is a real ResNet-18 exported to ONNX, with random weights: these
tests check the mechanics (every face of every frame classified, tracks, counts), not answers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskdet.__main__ import main
from maskdet.bench.kiosk import bench_kiosk
from maskdet.core.imageio import read_rgb
from maskdet.core.inference import MaskClassifier
from maskdet.core.model import build_model
from maskdet.deploy import clips, kiosk, photos

from .conftest import QUALITATIVE, SHARED

PEOPLE = ["masked_11.jpg", "unmasked_05.jpg"]  # one person each, large faces
REALDEV = SHARED / "realdev"


@pytest.fixture(scope="module")
def two_people(tmp_path_factory) -> Path:
    """24 frames of two real people side by side, walking up (MPEG-4 in an .mp4)."""
    frames = clips.clip_from_photos([QUALITATIVE / p for p in PEOPLE], frames=24, people=2)
    return clips.write_video(tmp_path_factory.mktemp("video") / "two.mp4", frames)


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_video_of_two_people_gives_two_tracks_with_decisions_and_counts(
    tmp_path, onnx_model, two_people
):
    log, out = tmp_path / "kiosk.jsonl", tmp_path / "annotated.mp4"
    s = kiosk.run_kiosk(two_people, onnx_model, out=out, log=log)
    assert (s["frames"], s["frames_expected"], s["decode_failures"], s["ended_early"]) == (
        24,
        24,
        0,
        "",
    )
    assert s["faces"] == s["classified"] == 48  # both people in every frame, all classified
    assert s["tracks"] == 2 and sum(s["final_decisions"].values()) == 2
    lines = read_log(log)
    assert lines[-1] == {k: v for k, v in s.items() if k != "ms"}
    decisions = [x for x in lines if x["event"] == "decision"]
    ends = [x for x in lines if x["event"] == "track_end"]
    assert len(decisions) == s["decision_lines"] >= 2
    assert sorted(x["track"] for x in ends) == [0, 1]
    assert all(x["frames_seen"] == 24 and x["decision"] in kiosk.DECISIONS for x in ends)
    for t in (0, 1):  # a track's first decision comes on its first frame, one line per change
        mine = [x for x in decisions if x["track"] == t]
        assert mine[0]["frame"] == 0 and len(mine[0]["box"]) == 4
        assert all(a["decision"] != b["decision"] for a, b in zip(mine, mine[1:]))
        assert mine[-1]["decision"] == next(x["decision"] for x in ends if x["track"] == t)
    # the two tracks are the two people: one on the left half, one on the right
    x_centre = {x["track"]: (x["box"][0] + x["box"][2]) / 2 for x in decisions}
    assert sorted(v < 320 for v in x_centre.values()) == [False, True]
    table = photos.tracks_table(log)  # notebook 06's table of people
    assert list(table.index) == [0, 1] and list(table["frames_seen"]) == [24, 24]
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 24
    ok, frame = cap.read()
    assert ok and frame.shape == (480, 640, 3)


def test_tracking_mode_reclassifies_every_nth_frame(tmp_path, onnx_model, two_people):
    s = kiosk.run_kiosk(two_people, onnx_model, log=None, classify_every=3)
    assert s["faces"] == 48 and s["classified"] == 2 * 8 and s["tracks"] == 2


def test_tracker_follows_boxes_and_decisions_do_not_flicker():
    tr = kiosk.Tracker(threshold=0.5, max_missed=2, min_frames=3)
    a, b = (100, 100, 200, 200), (400, 100, 500, 200)
    first = tr.update(0, [a, b])
    moved = tr.update(1, [(b[0] + 8, 100, b[2] + 8, 200), (a[0] + 8, 100, a[2] + 8, 200)])
    assert [t.id for t in moved] == [first[1].id, first[0].id]  # matched by overlap, not order
    t = first[0]
    noisy = [0.8, 0.45] * 8  # one frame's label would flip at 0.5 on every frame
    got = []
    for i, p in enumerate(noisy):
        tr.observe(t, p, i)
        got.append(t.decision)
    assert got[:2] == ["unsure"] * 2 and got[2:] == ["mask"] * 14  # smoothed: no flicker
    # hysteresis, one classification per decision (window 1): a decision holds inside the band
    # (0.40-0.60 in log-odds 0.4) until the threshold itself is crossed
    one = kiosk.Track(9, a, 0, 0)
    tr1 = kiosk.Tracker(threshold=0.5, window=1, min_frames=1)
    seq = {
        0.7: "mask",
        0.55: "mask",
        0.45: "unsure",
        0.56: "unsure",
        0.3: "no mask",
        0.42: "no mask",
        0.58: "unsure",
    }
    for p, want in seq.items():
        tr1.observe(one, p, 0)
        assert one.decision == want, (p, one.decision)
    for f in range(2, 6):  # b keeps being seen, a is gone: a's track ends after max_missed
        tr.update(f, [(b[0] + 8, 100, b[2] + 8, 200)])
    assert [x.id for x in tr.ended] == [t.id]
    assert tr.update(6, [a])[0].id not in (first[0].id, first[1].id)  # back: a new track


def test_batched_and_single_face_probabilities_match(onnx_model):
    crops = [read_rgb(p) for p in sorted((REALDEV / "mask").glob("*.png"))[:6]]
    crops += [read_rgb(p) for p in sorted((REALDEV / "nomask").glob("*.png"))[:6]]
    model, _ = build_model("resnet18", pretrained=False, verbose=False)
    pt = MaskClassifier.from_model(model.eval(), {"threshold": 0.5})
    for clf in (MaskClassifier(onnx_model), pt):
        batched = clf.probs(crops, batch_size=32)
        single = np.concatenate([clf.probs([c]) for c in crops])
        np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)
        assert batched.std() > 0  # different faces, different probabilities


def test_truncated_and_corrupt_videos_are_counted_not_crashed(tmp_path, onnx_model):
    frames = clips.clip_from_photos([QUALITATIVE / PEOPLE[0]], frames=30)
    avi = clips.write_video(tmp_path / "clip.avi", frames)  # Motion JPEG: readable when cut
    data = avi.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    s = kiosk.run_kiosk(cut, onnx_model, log=tmp_path / "cut.jsonl")
    assert s["frames_expected"] == 30 and 0 < s["frames"] < 30
    assert s["decode_failures"] == kiosk.MAX_READ_FAILURES
    assert (
        s["ended_early"]
        == f"the video ended after {s['frames']} of 30 frames (truncated or corrupt)"
    )
    assert read_log(tmp_path / "cut.jsonl")[-1]["frames"] == s["frames"]
    mp4 = clips.write_video(tmp_path / "clip.mp4", frames)
    broken = bytearray(mp4.read_bytes())
    broken[len(broken) // 3 : len(broken) // 3 + 3000] = b"\xff" * 3000  # one damaged frame
    (tmp_path / "damaged.mp4").write_bytes(bytes(broken))
    s = kiosk.run_kiosk(tmp_path / "damaged.mp4", onnx_model, log=None)
    assert s["decode_failures"] >= 1 and s["frames"] + s["decode_failures"] == 30
    assert s["ended_early"] == "" and s["frames"] >= 25
    (tmp_path / "cut.mp4").write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    with pytest.raises(kiosk.KioskError, match="cannot be read as a video"):
        kiosk.run_kiosk(tmp_path / "cut.mp4", onnx_model)


def test_cli_bad_sources_give_one_line_errors(
    tmp_path, onnx_model, two_people, capsys, monkeypatch
):
    camera = next(n for n in range(90, 100) if not Path(f"/dev/video{n}").exists())
    junk = tmp_path / "notes.mp4"
    junk.write_text("not a video\n" * 100)
    cases = {
        ("--camera", str(camera)): f"kiosk: camera {camera} cannot be opened",
        ("--video", str(tmp_path / "none.mp4")): "kiosk: no such video file",
        ("--video", str(junk)): "cannot be read as a video",
    }
    for source, message in cases.items():
        assert main(["kiosk", *source, "--model", str(onnx_model)]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (source, err)
    monkeypatch.chdir(tmp_path)
    assert main(["kiosk", "--video", str(two_people), "--model", str(onnx_model)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tracks"] == 2 and summary["frames"] == 24
    assert read_log(tmp_path / "kiosk.jsonl")[-1] == summary  # the default log, in the cwd


def test_single_face_photos_alternate_labels(tmp_path):
    names = ["masked_03", "masked_05", "masked_11", "masked_23"]  # masked_23: no face found
    names += ["unmasked_01", "unmasked_03", "unmasked_05", "unmasked_18"]  # 03, 18: 2-3 faces
    lines = (QUALITATIVE / "labels.csv").read_text().splitlines()
    keep = [lines[0]] + [x for x in lines[1:] if x.split(".")[0] in names]
    (tmp_path / "labels.csv").write_text("\n".join(keep) + "\n")
    for n in names:
        shutil.copy(QUALITATIVE / f"{n}.jpg", tmp_path)
    found = [p.stem for p in clips.single_face_photos(tmp_path)]
    assert found == ["masked_03", "unmasked_01", "masked_05", "unmasked_05", "masked_11"]


@pytest.mark.slow
def test_bench_kiosk_prints_both_tables(capsys):
    res = bench_kiosk(arch="resnet18", frames=4, rounds=1, crops=4)
    out = capsys.readouterr().out
    settings = {r["setting"] for r in res["kiosk"]}
    assert len(res["kiosk"]) == 2 * len(settings) == 8 and "MTCNN + PyTorch (today)" in settings
    assert [r["path"] for r in res["predict"]][0] == "MTCNN + PyTorch, one at a time (today)"
    assert res["predict"][0]["agreement"] == 1.0 and len(res["predict"]) == 4
    for r in res["kiosk"] + res["predict"]:
        assert (r.get("setting") or r["path"]) in out
