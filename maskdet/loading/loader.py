"""Stage 03: the augmented 112x112 loaders (per-image DataLoader and a cached, batched fast path).

Two ways to feed the model, one augmentation family
(:class:`maskdet.loading.augment_presets.AugmentConfig`), both yielding :class:`maskdet.loading.batch.Batch`:

``dataloader``
    :class:`FaceDataset` reads each PNG with :func:`maskdet.core.imageio.read_rgb` in DataLoader worker
    processes and augments it with ``torchvision.transforms.v2`` (per image, on the CPU).
``cached``
    :func:`maskdet.loading.cache.build_cache` decodes every image once into a ``uint8`` memory-mapped
    array in ``DATA_DIR/cache``; :class:`CachedLoader` slices whole batches from it and augments
    each batch at once (:class:`maskdet.loading.augment.BatchAugment`, parameters drawn on the CPU per
    batch): on a GPU with tensor operations on the GPU-resident cache, prepared ahead on a side
    stream; on a CPU with OpenCV's ``uint8`` kernels in two threads.

A bad or missing image is skipped and counted, never a crash.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..core.constants import SPLITS
from ..core.imageio import BadImage, read_rgb
from ..core.manifest import Item, read_manifest, select_rows
from ..core.system import default_workers
from .augment import (
    BatchAugment,
    center_crop_batch,
    eval_transform,
    to_tensor_uint8,
    train_transform,
)
from .augment_presets import AugmentConfig
from .batch import Batch, SkipCounter, Skipped, collate_skip
from .cache import ImageCache, build_cache
from .distributed import SINGLE, DistEnv, shard_bounds


class FaceDataset(Dataset):
    """Faces of one split listed in the manifest (status ``ok``), read with :func:`read_rgb`.

    ``__getitem__`` returns ``(image, label, index)``; an unreadable or missing file gives a
    :class:`Skipped` record instead, which :func:`collate_skip` drops and reports.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        split: str,
        transform=None,
        limit: int | None = None,
        seed: int = 0,
        items: list[Item] | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.split = split
        self.items = (
            items if items is not None else select_rows(read_manifest(data_dir), split, limit, seed)
        )
        self.transform = transform if transform is not None else eval_transform()

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [it.label for it in self.items]

    def __getitem__(self, index: int):
        item = self.items[index]
        try:
            rgb = read_rgb(self.data_dir / item.path)
        except BadImage as err:
            return Skipped(index, item.path, str(err))
        return self.transform(to_tensor_uint8(rgb)), item.label, index


class FaceLoader:
    """The per-image path: a DataLoader over :class:`FaceDataset` that yields :class:`Batch`es.

    Shuffling is seeded per epoch (``set_epoch``), so an epoch's order and augmentations are the
    same whether or not training was interrupted before it.
    """

    def __init__(
        self,
        dataset: FaceDataset,
        batch_size: int = 64,
        shuffle: bool = False,
        workers: int | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        drop_last: bool = False,
    ):
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.workers = default_workers() if workers is None else workers
        self.device = torch.device(device)
        self.seed, self.epoch, self.drop_last = seed, 0, drop_last
        self.skips = SkipCounter()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        cuda = self.device.type == "cuda"
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            generator=g,
            num_workers=self.workers,
            collate_fn=collate_skip,
            pin_memory=cuda,
            drop_last=self.drop_last,
            persistent_workers=False,
            prefetch_factor=4 if self.workers else None,
        )
        for batch in loader:
            self.skips.add(batch.skipped)
            if len(batch.labels):
                yield batch.to(self.device, non_blocking=cuda)


class CachedLoader:
    """The fast path: batches sliced from an :class:`ImageCache`, augmented on ``device``.

    On a GPU the whole split's uint8 cache is copied to GPU memory once (when it takes under a
    quarter of the free memory; else each batch is gathered into pinned memory), and a
    background thread prepares the next batches on a side CUDA stream (gather, augmentation),
    ``GROUP`` batches per pass, while the model trains on the current one: nothing in that path
    waits for the GPU.
    On the CPU the OpenCV kernel reads the cache rows in place (no gather) in the calling
    process, two threads each taking half of the batch's images (OpenCV releases the GIL inside
    every call): 1.3-1.5x one thread on the 2-core machine; worker processes (fork per epoch,
    shipping 9.6 MB float batches) were slower. Every batch draws its augmentation from a CPU
    generator seeded by (seed, epoch, batch index), so a batch is the same whichever device
    augments it. ``augment=None`` gives the deterministic val/test view.

    ``dist`` (under torchrun): this rank yields only its part (:func:`shard_bounds`) of every
    global batch, with the parameters the whole batch drew, so the ranks' parts put together
    are the single-process batch whatever the rank count. A part can be empty only for a last
    val/test batch smaller than the rank count; it is skipped.
    """

    PREFETCH = 3
    """Batches prepared ahead on a GPU, beyond the group being handed out."""
    GROUP = 8
    """Batches the GPU's background thread augments in one pass (:meth:`_batch_group`)."""

    def __init__(
        self,
        cache: ImageCache,
        batch_size: int = 64,
        shuffle: bool = False,
        augment: str | AugmentConfig | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        drop_last: bool = False,
        backend: str = "auto",
        prefetch: bool = True,
        dist: DistEnv = SINGLE,
    ):
        self.cache, self.batch_size, self.shuffle = cache, batch_size, shuffle
        self.dist = dist
        self.device = torch.device(device)
        self.augment = BatchAugment(augment, backend=backend) if augment is not None else None
        self.seed, self.epoch, self.drop_last = seed, 0, drop_last
        self.prefetch = prefetch
        self.index = np.flatnonzero(cache.valid)
        self.labels = torch.from_numpy(cache.labels)
        self.skips = SkipCounter()
        self.skips.add([Skipped(-1, p, r) for p, r in cache.skipped.items()])
        self._on_device: tuple[torch.Tensor, torch.Tensor] | bool | None = None

    @property
    def dataset_items(self) -> list[Item]:
        return self.cache.items

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.index)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _batches(self) -> list[np.ndarray]:
        idx = self.index
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            idx = idx[torch.randperm(len(idx), generator=g).numpy()]
        out = [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        return out

    def device_cache(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(images (N, side, side, 3) uint8, labels (N,))`` on the GPU, copied once; ``None``
        on the CPU or when the cache would take more than a quarter of the free GPU memory."""
        if self.device.type != "cuda":
            return None
        if self._on_device is None:
            free, _ = torch.cuda.mem_get_info(self.device)
            if self.cache.images.nbytes > free // 4:
                self._on_device = False  # decided once: gather into pinned memory instead
            else:
                images = torch.from_numpy(np.ascontiguousarray(self.cache.images))
                self._on_device = (images.to(self.device), self.labels.to(self.device))
        return self._on_device or None

    def _device_rows(self, sel: np.ndarray) -> torch.Tensor | None:
        """Cache rows ``sel`` as an index tensor on the GPU (one pinned copy), when the cache
        lives there."""
        if self.device_cache() is None:
            return None
        return torch.from_numpy(sel).pin_memory().to(self.device, non_blocking=True)

    def _gather(self, sel: np.ndarray, rows: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 ``(B, 3, side, side)`` of cache rows ``sel``: sliced on the GPU when the cache
        lives there (``rows``: ``sel`` already on the GPU), else read from the memmap in file
        order (pinned when going to a GPU)."""
        on_device = self.device_cache()
        if on_device is not None:
            rows = self._device_rows(sel) if rows is None else rows
            return on_device[0].index_select(0, rows).permute(0, 3, 1, 2)
        order = np.argsort(sel)  # read the memmap in file order, then restore the batch order
        arr = np.empty((len(sel),) + self.cache.images.shape[1:], dtype=np.uint8)
        arr[order] = self.cache.images[sel[order]]
        t = torch.from_numpy(arr).permute(0, 3, 1, 2)
        if self.device.type == "cuda":
            t = t.contiguous().pin_memory().to(self.device, non_blocking=True)
        return t

    def _generator(self, k: int) -> torch.Generator:
        """The (CPU) augmentation generator of batch ``k``, seeded by (seed, epoch, k)."""
        seed = int(np.random.SeedSequence([self.seed, self.epoch, k]).generate_state(1)[0])
        return torch.Generator().manual_seed(seed)

    def _labels(self, sel: np.ndarray, rows: torch.Tensor | None) -> torch.Tensor:
        if rows is None:
            return self.labels[sel].to(self.device, non_blocking=self.device.type == "cuda")
        return self.device_cache()[1].index_select(0, rows)

    def _params(self, k: int, n: int, part: slice) -> dict:
        """Augmentation parameters of this rank's ``part`` of global batch ``k`` (``n``
        images): drawn for the whole batch, then cut."""
        p = self.augment.sample(n, self._generator(k))
        return p if self.dist.world_size == 1 else BatchAugment.take(p, part)

    def _batch_group(self, ks: list[int], sels: list[np.ndarray]) -> list[Batch]:
        """This rank's part of batches ``ks`` of the epoch (cache rows ``sels``, the global
        batches), each augmented with its own parameters (drawn from :meth:`_generator`).

        The CPU kernel reads the cache rows in place (no gather), batch by batch. The tensor
        kernel takes the whole group in one gather and one pass over all its images: on a GPU
        that pays the augmentation's kernel launches (about 40, a cost of the host) once per
        group instead of once per batch, with the same batches as one at a time (tested)."""
        parts = [shard_bounds(len(s), self.dist) for s in sels]
        mine = [s[p] for s, p in zip(sels, parts)]
        totals = [len(s) if self.dist.world_size > 1 else 0 for s in sels]
        if self.augment is not None and self.augment.kernel(self.device) == "cv2":
            out = []
            for k, sel, part, total in zip(ks, mine, parts, totals):
                p = self._params(k, total or len(sel), part)
                images = self.augment.apply_cv2([self.cache.images[j] for j in sel], p)
                out.append(Batch(images, self._labels(sel, None), torch.from_numpy(sel), [], total))
            return out
        sel = np.concatenate(mine)
        rows = self._device_rows(sel)
        u8, labels = self._gather(sel, rows), self._labels(sel, rows)
        if self.augment is None:
            images = center_crop_batch(u8)
        else:
            params = [self._params(k, len(s), p) for k, s, p in zip(ks, sels, parts)]
            images = self.augment._apply_torch(u8, BatchAugment.merge(params))
        sizes = [len(s) for s in mine]
        return [
            Batch(x, y, torch.from_numpy(s), [], total)
            for x, y, s, total in zip(images.split(sizes), labels.split(sizes), mine, totals)
        ]

    def _batch(self, k: int, sel: np.ndarray) -> Batch:
        return self._batch_group([k], [sel])[0]

    def __iter__(self) -> Iterator[Batch]:
        batches = self._batches()
        if self.device.type == "cuda" and self.prefetch:
            parts = self._prefetched(batches)
        else:  # the CPU kernel reads the cache in place
            parts = (self._batch(k, sel) for k, sel in enumerate(batches))
        try:
            for batch in parts:
                if len(batch.labels):  # empty only for a rank's part of a short last val batch
                    yield batch
        finally:
            parts.close()

    def _prefetched(self, batches: list[np.ndarray]) -> Iterator[Batch]:
        """Batches prepared by a background thread, ``PREFETCH`` ahead. On a GPU it works on a
        side stream and the consumer's stream waits on each batch's event (no host
        synchronisation); the images are marked as used by the consumer's stream so that the
        allocator does not hand their memory out too early."""
        cuda = self.device.type == "cuda"
        if cuda:
            self.device_cache()  # the one-off upload happens here, not inside the timed loop
            side = torch.cuda.Stream(self.device)
        ready: queue.Queue = queue.Queue(self.PREFETCH + self.GROUP)
        stop = threading.Event()

        def produce() -> None:
            try:
                with contextlib.ExitStack() as ctx:
                    if cuda:
                        ctx.enter_context(torch.cuda.device(self.device))
                        ctx.enter_context(torch.cuda.stream(side))
                    for start in range(0, len(batches), self.GROUP):
                        if stop.is_set():
                            return
                        ks = list(range(start, min(start + self.GROUP, len(batches))))
                        group, done = self._batch_group(ks, [batches[k] for k in ks]), None
                        if cuda:
                            done = torch.cuda.Event()
                            done.record(side)
                        for batch in group:
                            ready.put((batch, done))
                ready.put(None)
            except BaseException as e:  # handed to the consumer, raised there
                ready.put(e)

        worker = threading.Thread(target=produce, name="maskdet-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                batch, done = item
                if done is not None:
                    stream = torch.cuda.current_stream(self.device)
                    stream.wait_event(done)
                    batch.images.record_stream(stream)
                    batch.labels.record_stream(stream)
                yield batch
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    ready.get(timeout=0.05)
                except queue.Empty:
                    pass
            worker.join()


# ----------------------------------------------------------------------------- factory


def make_loaders(
    data_dir: str | os.PathLike,
    batch_size: int = 64,
    mode: str = "cached",
    aug: str | AugmentConfig = "default",
    workers: int | None = None,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    val_limit: int | None = None,
    seed: int = 0,
    splits: tuple[str, ...] = SPLITS,
    rows: list[dict[str, str]] | None = None,
    cache_dir: str | os.PathLike | None = None,
    dist: DistEnv = SINGLE,
) -> dict[str, FaceLoader | CachedLoader]:
    """Loaders for the splits: train shuffled and augmented, val/test deterministic.

    ``mode``: ``cached`` (decode once, augment batches on ``device``) or ``dataloader``
    (per-image transforms in ``workers`` processes). ``limit``/``val_limit`` cap the images
    per split (whole twin pairs, seeded). Train drops a last partial batch only when it has
    fewer than 2 images per rank (BatchNorm needs 2). ``rows``: the manifest, when the caller
    has read it. ``cache_dir``: where the cached loader keeps its decoded images (see
    :func:`maskdet.loading.cache.cache_location`). ``dist``: under torchrun each loader yields this
    rank's part of every global batch (cached loader only; ``batch_size`` is the global batch).
    """
    if mode not in ("cached", "dataloader"):
        raise ValueError(f"loader mode must be 'cached' or 'dataloader', not {mode!r}")
    if dist.world_size > 1 and mode != "cached":
        raise ValueError(
            "several ranks read their parts of each batch from the cached loader: use "
            "--loader cached"
        )
    if "train" in splits and batch_size < 2 * dist.world_size:
        raise ValueError(
            f"a global batch of {batch_size} over {dist.world_size} ranks leaves a rank fewer "
            "than 2 images (BatchNorm needs 2): raise --batch-size or use fewer ranks"
        )
    rows = read_manifest(data_dir) if rows is None else rows
    out: dict = {}
    for split in splits:
        lim = limit if split == "train" else (val_limit if val_limit is not None else limit)
        train = split == "train"
        items = select_rows(rows, split, lim, seed)
        drop_last = train and 0 < len(items) % batch_size < 2 * dist.world_size
        if mode == "cached":
            cache = build_cache(data_dir, split, workers=workers, items=items, cache_dir=cache_dir)
            out[split] = CachedLoader(
                cache,
                batch_size,
                shuffle=train,
                augment=aug if train else None,
                device=device,
                seed=seed,
                drop_last=drop_last,
                dist=dist,
            )
        else:
            tf = train_transform(aug) if train else eval_transform()
            ds = FaceDataset(data_dir, split, tf, items=items)
            out[split] = FaceLoader(
                ds,
                batch_size,
                shuffle=train,
                workers=workers,
                device=device,
                seed=seed,
                drop_last=drop_last,
            )
    return out


def first_batches(loader: FaceLoader | CachedLoader, n: int = 1) -> list[Batch]:
    """The first ``n`` batches of ``loader`` (its iterator closed, so that a background
    producer or the DataLoader's workers stop)."""
    it = iter(loader)
    try:
        return [b for _, b in zip(range(n), it)]
    finally:
        it.close()


def loader_items(loader: FaceLoader | CachedLoader) -> list[Item]:
    """The items a loader's ``Batch.indices`` refer to."""
    return loader.cache.items if isinstance(loader, CachedLoader) else loader.dataset.items
