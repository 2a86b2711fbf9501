"""The kiosk: faces in a video or a camera stream, classified on every frame, followed across
frames, and one decision per person that does not flicker.

``python -m maskdet kiosk --model MODEL (--video FILE | --camera N) [--out annotated.mp4]``
    Every frame: YuNet finds the faces (at :data:`~maskdet.deploy.detect.FRAME_DETECT_SIZE`), each is
    cut with the training framing, and all faces of the frame are classified in one batch
    (``model.int8.onnx`` or ``model.onnx`` from ``export``, or a ``best.pt``). Faces are followed
    by box overlap (:class:`Tracker`); a track's probability is the mean over its last frames,
    and its decision is "mask", "no mask" or "unsure" (:meth:`Tracker.decide`). The annotated
    video goes to ``--out``; the JSON-lines log (``--log``) has a line per track decision (a
    track's first decision and every change: frame, time, box, probability, decision), a line
    when a track ends and a summary line (frames, decode failures, faces, tracks, decisions,
    milliseconds per frame). Headless by default; ``--show`` opens a window where there is a
    display. A missing file or camera, a file that is not a video, a truncated video or a frame
    that fails to decode gives a one-line message and counts in the summary, never a traceback.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..core.guard import OutputRefused, UnsafeFile, check_output, check_regular, writing
from ..core.inference import MaskClassifier
from .detect import DETECT_SIZE, FaceDetector, box_iou, crop_face

DECISIONS = ("mask", "no mask", "unsure")
COLOURS = {"mask": (0, 200, 0), "no mask": (0, 0, 230), "unsure": (0, 200, 230)}
"""Box colours (BGR) per decision: green, red, yellow."""
MAX_READ_FAILURES = 5
"""Consecutive frames that fail to decode before a stream is taken to have ended."""


class KioskError(RuntimeError):
    """A video source that cannot be used; ``str(err)`` is a one-line message for the user."""


# ------------------------------------------------------------------------------ tracks


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


@dataclass
class Track:
    """One person followed across frames: last box, recent probabilities, current decision."""

    id: int
    box: tuple[float, float, float, float]
    first_frame: int
    last_frame: int
    probs: list[float] = field(default_factory=list)
    seen: int = 1
    last_classified: int = -(10**9)
    decision: str = ""

    @property
    def prob(self) -> float:
        """The smoothed probability of a mask (NaN before the first classification)."""
        return float(np.mean(self.probs)) if self.probs else float("nan")


class Tracker:
    """Faces matched to tracks by box overlap, greedily by IoU (at least ``iou``); a face with
    no match starts a track, a track unseen for more than ``max_missed`` frames ends.

    A track's probability is the mean of its last ``window`` classifications. Decision: "unsure"
    for its first ``min_frames`` classifications and while the probability is within ``margin``
    of the threshold in log-odds (0.4: 0.40-0.60 around a threshold of 0.5, 0.04-0.06 around
    0.05); past that band it is "mask" or "no mask", and a decision holds until the probability
    crosses the threshold itself (hysteresis: no flicker at the band's edge).
    """

    def __init__(
        self,
        threshold: float = 0.5,
        iou: float = 0.3,
        max_missed: int = 10,
        window: int = 15,
        min_frames: int = 3,
        margin: float = 0.4,
    ) -> None:
        self.threshold, self.iou, self.max_missed = threshold, iou, max_missed
        self.window, self.min_frames, self.margin = window, min_frames, margin
        self.live: list[Track] = []
        self.ended: list[Track] = []
        self._next_id = 0

    def update(self, frame: int, boxes: Sequence[tuple[float, float, float, float]]) -> list[Track]:
        """The track of each box of ``frame`` (same order); ends the tracks lost for too long."""
        pairs = sorted(
            (
                (box_iou(b, t.box), i, j)
                for i, b in enumerate(boxes)
                for j, t in enumerate(self.live)
            ),
            reverse=True,
        )
        out: list[Track | None] = [None] * len(boxes)
        used: set[int] = set()
        for overlap, i, j in pairs:
            if overlap < self.iou:
                break
            if out[i] is None and j not in used:
                t = self.live[j]
                t.box, t.last_frame, t.seen = tuple(boxes[i]), frame, t.seen + 1
                out[i] = t
                used.add(j)
        for i, b in enumerate(boxes):
            if out[i] is None:
                out[i] = Track(self._next_id, tuple(b), frame, frame)
                self._next_id += 1
                self.live.append(out[i])
        gone = [t for t in self.live if frame - t.last_frame > self.max_missed]
        self.ended += gone
        self.live = [t for t in self.live if t not in gone]
        return out  # type: ignore[return-value]

    def observe(self, track: Track, prob: float, frame: int) -> bool:
        """Add a classification to a track; True when its decision changed."""
        track.probs = (track.probs + [float(prob)])[-self.window :]
        track.last_classified = frame
        new = self.decide(track)
        changed, track.decision = new != track.decision, new
        return changed

    def decide(self, track: Track) -> str:
        """The decision for a track's smoothed probability (see the class docstring)."""
        if len(track.probs) < self.min_frames:
            return "unsure"
        z = _logit(track.prob) - _logit(self.threshold)
        if z >= self.margin or (track.decision == "mask" and z >= 0):
            return "mask"
        if z < -self.margin or (track.decision == "no mask" and z < 0):
            return "no mask"
        return "unsure"

    def finish(self) -> list[Track]:
        """End every live track; all tracks, by id."""
        self.ended += self.live
        self.live = []
        return sorted(self.ended, key=lambda t: t.id)


# ---------------------------------------------------------------------------- one frame


@dataclass
class Seen:
    """A face in one frame: its box, track, this frame's probability (None when not classified
    in this frame) and whether its track's decision changed."""

    box: tuple[float, float, float, float]
    track: Track
    prob: float | None
    changed: bool


class Kiosk:
    """Detector, classifier and tracker for a stream of frames (:meth:`step` per frame).

    ``classify_every``: 1 classifies every face of every frame; N > 1 re-classifies a tracked
    face only every N frames (a separate, faster mode: the benchmark reports it on its own).
    """

    def __init__(
        self,
        classifier: MaskClassifier,
        detector: FaceDetector | None = None,
        tracker: Tracker | None = None,
        classify_every: int = 1,
    ) -> None:
        self.classifier = classifier
        self.detector = detector or FaceDetector(detect_size=DETECT_SIZE["frame"])
        self.tracker = tracker or Tracker(classifier.threshold)
        self.classify_every = max(1, classify_every)

    def step(self, rgb: np.ndarray, frame: int) -> list[Seen]:
        """Detect, track and classify (one batch) the faces of an RGB frame."""
        faces = self.detector.detect(rgb)
        tracks = self.tracker.update(frame, [f.box for f in faces])
        due = [
            i
            for i, t in enumerate(tracks)
            if frame - t.last_classified >= self.classify_every or not t.probs
        ]
        crops = [
            crop_face(rgb, faces[i].box, faces[i].detector, landmarks=faces[i].landmarks)
            for i in due
        ]
        probs = dict(zip(due, self.classifier.probs(crops))) if crops else {}
        seen = []
        for i, (f, t) in enumerate(zip(faces, tracks)):
            p = probs.get(i)
            changed = self.tracker.observe(t, p, frame) if p is not None else False
            seen.append(Seen(f.box, t, None if p is None else float(p), changed))
        return seen


def draw(bgr: np.ndarray, seen: Sequence[Seen]) -> np.ndarray:
    """Boxes and labels ("#track decision p") on a BGR frame, in place."""
    for s in seen:
        x0, y0, x1, y1 = (int(round(v)) for v in s.box)
        colour = COLOURS.get(s.track.decision, COLOURS["unsure"])
        cv2.rectangle(bgr, (x0, y0), (x1, y1), colour, 2)
        text = f"#{s.track.id} {s.track.decision} {s.track.prob:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        cv2.rectangle(bgr, (x0, max(0, y0 - th - 6)), (x0 + tw + 4, max(th + 6, y0)), colour, -1)
        cv2.putText(
            bgr, text, (x0 + 2, max(th + 2, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1
        )
    return bgr


# ------------------------------------------------------------------------------- video


def open_video(source: str | os.PathLike | int) -> cv2.VideoCapture:
    """A video file or a camera index as an open ``cv2.VideoCapture``, or :class:`KioskError`."""
    # our own one-line messages replace FFmpeg's and OpenCV's log lines
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    if isinstance(source, int):
        cap = cv2.VideoCapture(source)
        if not cap.isOpened():
            raise KioskError(f"camera {source} cannot be opened (no such camera, or it is in use)")
        return cap
    path = Path(source)
    if not path.exists():
        raise KioskError(f"no such video file: {path}")
    try:
        check_regular(path)  # a FIFO or a device would block the reader, or never end
    except UnsafeFile as err:
        raise KioskError(f"{path}: {err}") from None
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise KioskError(
            f"{path} cannot be read as a video (not a video, or truncated: an MP4 cut short "
            "loses its index)"
        )
    return cap


@dataclass
class ReadStats:
    """What reading a stream gave: frames decoded, failures, and how it ended."""

    expected: int = 0
    frames: int = 0
    decode_failures: int = 0
    ended_early: str = ""


def read_frames(
    cap: cv2.VideoCapture, stats: ReadStats, camera: bool = False
) -> Iterator[np.ndarray]:
    """The BGR frames of an open capture. A frame that fails to decode is counted and skipped;
    :data:`MAX_READ_FAILURES` in a row end the stream, and when a file ends before the frame
    count in its header, or a ``camera`` stops sending frames, ``stats.ended_early`` says so."""
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    stats.expected = int(count) if count and count > 0 else 0
    failures = 0
    while True:
        ok, frame = cap.read()
        if ok:
            failures = 0
            stats.frames += 1
            yield frame
            continue
        if stats.expected and stats.frames + stats.decode_failures >= stats.expected:
            return  # the end of a file
        stats.decode_failures += 1
        failures += 1
        if failures >= MAX_READ_FAILURES:
            if stats.expected:
                stats.ended_early = (
                    f"the video ended after {stats.frames} of {stats.expected} frames "
                    "(truncated or corrupt)"
                )
            elif stats.frames == 0:
                stats.ended_early = "no frame could be decoded"
            elif camera:
                stats.ended_early = f"the camera stopped sending frames after {stats.frames}"
            return


def video_writer(
    path: str | os.PathLike,
    fps: float,
    size: tuple[int, int],
    named: str | os.PathLike | None = None,
) -> cv2.VideoWriter:
    """A writer for ``.mp4`` (MPEG-4 part 2) or ``.avi`` (Motion JPEG) files (``named``: the
    output's final name, for the message, when ``path`` is its temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    if not writer.isOpened():
        raise KioskError(f"cannot write a video to {named or path} (use .mp4 or .avi)")
    return writer


def _same_output(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


# ------------------------------------------------------------------------------ the run


def _show(bgr: np.ndarray) -> bool:
    """Show a frame in a window; False where there is no display (or OpenCV has no GUI)."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.name == "nt"):
        return False
    try:
        cv2.imshow("maskdet kiosk", bgr)
        cv2.waitKey(1)
        return True
    except cv2.error:
        return False


def _decision_line(s: Seen, frame: int, fps: float) -> dict:
    t = s.track
    return {
        "event": "decision",
        "track": t.id,
        "frame": frame,
        "time_s": round(frame / fps, 3),
        "box": [round(v, 1) for v in s.box],
        "prob": round(t.prob, 4),
        "decision": t.decision,
    }


def _track_end_line(t: Track) -> dict:
    return {
        "event": "track_end",
        "track": t.id,
        "first_frame": t.first_frame,
        "last_frame": t.last_frame,
        "frames_seen": t.seen,
        "prob": round(t.prob, 4),
        "decision": t.decision,
    }


def run_kiosk(
    source: str | os.PathLike | int,
    model: str | os.PathLike | MaskClassifier,
    out: str | os.PathLike | None = None,
    log: str | os.PathLike | None = "kiosk.jsonl",
    detector: FaceDetector | None = None,
    threads: int = 2,
    classify_every: int = 1,
    max_frames: int | None = None,
    show: bool = False,
    keep_frames: bool = False,
    overwrite: bool = False,
) -> dict:
    """Run the kiosk on a video file or a camera index (see the module docstring).

    Returns the summary (also the log's last line) with, in addition, ``ms``: the milliseconds
    of every frame end to end (decode, detect, crop, classify, track, draw, write), and with
    ``keep_frames`` the annotated RGB frames under ``frames_rgb`` (for a notebook).

    ``out`` and ``log`` are checked first (:func:`maskdet.core.guard.check_output`): neither may be
    the video, the model or each other, nor a file maskdet did not write (unless ``overwrite``);
    each is written under a temporary name and renamed at the end."""
    reads = [] if isinstance(source, int) else [source]
    if not isinstance(model, MaskClassifier):
        reads.append(model)
    if out is not None and log and _same_output(out, log):
        raise OutputRefused(f"--out {out} and --log {log} name the same file")
    for path, what in ((out, "--out"), (log, "--log")):
        if path:
            check_output(path, reads, overwrite, what)
    cap = open_video(source)  # before the model loads: a missing camera fails at once
    clf = model if isinstance(model, MaskClassifier) else MaskClassifier(model, threads=threads)
    kiosk = Kiosk(clf, detector, classify_every=classify_every)
    tracker = kiosk.tracker
    fps = cap.get(cv2.CAP_PROP_FPS) or 15.0
    stats, writer, shown, log_fh = ReadStats(), None, show, None
    outputs = ExitStack()
    if log:
        log_part = outputs.enter_context(writing(log, reads, overwrite, "--log"))
        log_fh = outputs.enter_context(open(log_part, "w", encoding="utf-8"))

    def emit(line: dict) -> None:
        if log_fh:
            log_fh.write(json.dumps(line) + "\n")
            log_fh.flush()

    ms: list[float] = []
    kept: list[np.ndarray] = []
    counts = {"faces": 0, "classified": 0, "decision_lines": 0}
    ended, stopped = 0, False
    try:
        frames = read_frames(cap, stats, camera=isinstance(source, int))
        while max_frames is None or stats.frames < max_frames:
            t0 = time.perf_counter()
            bgr = next(frames, None)
            if bgr is None:
                break
            i = stats.frames - 1
            seen = kiosk.step(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), i)
            draw(bgr, seen)
            if out is not None:
                if writer is None:
                    video = outputs.enter_context(writing(out, reads, overwrite))
                    writer = video_writer(video, fps, (bgr.shape[1], bgr.shape[0]), out)
                writer.write(bgr)
            ms.append((time.perf_counter() - t0) * 1e3)
            if shown and not _show(bgr):
                shown = False
                print("kiosk: no display here; running headless")
            if keep_frames:
                kept.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            counts["faces"] += len(seen)
            counts["classified"] += sum(s.prob is not None for s in seen)
            for s in seen:
                if s.changed:
                    counts["decision_lines"] += 1
                    emit(_decision_line(s, i, fps))
            for t in tracker.ended[ended:]:
                emit(_track_end_line(t))
            ended = len(tracker.ended)
    except KeyboardInterrupt:  # a camera is stopped with Ctrl-C: keep what was done
        stopped = True
    except BaseException as err:
        cap.release()
        if writer is not None:
            writer.release()
        outputs.__exit__(type(err), err, err.__traceback__)
        raise
    cap.release()
    if writer is not None:
        writer.release()
    tracks = tracker.finish()
    for t in tracker.ended[ended:]:
        emit(_track_end_line(t))
    summary = {
        "event": "summary",
        "source": str(source),
        "frames": stats.frames,
        "frames_expected": stats.expected,
        "decode_failures": stats.decode_failures,
        "ended_early": stats.ended_early,
        "stopped_by_user": stopped,
        **counts,
        "tracks": len(tracks),
        "final_decisions": {d: sum(t.decision == d for t in tracks) for d in DECISIONS},
        "ms_per_frame_p50": round(float(np.percentile(ms, 50)), 2) if ms else None,
        "ms_per_frame_p95": round(float(np.percentile(ms, 95)), 2) if ms else None,
        "out": str(out) if out else "",
        "log": str(log) if log else "",
    }
    emit(summary)
    outputs.close()  # the log and the video take their names
    summary["ms"] = ms
    if keep_frames:
        summary["frames_rgb"] = kept
    return summary
