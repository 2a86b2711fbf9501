"""Stage 03 loader on real faces (lfw-mini, stage 01 + builtin stage 02): no mocks."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from maskdet.bench.loader import bench_loader
from maskdet.core.constants import IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD
from maskdet.core.manifest import read_manifest, select_rows
from maskdet.loading.augment import BatchAugment, center_crop_batch
from maskdet.loading.cache import build_cache
from maskdet.loading.figures import augmented_grid
from maskdet.loading.jpeg import jpeg_compress
from maskdet.loading.loader import CachedLoader, loader_items, make_loaders


@pytest.fixture(scope="module")
def masked_data(masked_mini):
    """16 lfw-mini people with builtin masked twins (stages 01 and 02 for real)."""
    return masked_mini


def _all(loader, epoch=0):
    loader.set_epoch(epoch)
    xs, ys, paths = [], [], []
    items = loader_items(loader)
    for b in loader:
        xs.append(b.images.cpu())
        ys.append(b.labels.cpu())
        paths += [items[i].path for i in b.indices.tolist()]
    return torch.cat(xs), torch.cat(ys), paths


@pytest.mark.parametrize("mode", ["cached", "dataloader"])
def test_batches_shapes_labels_and_balance(masked_data, mode):
    loaders = make_loaders(masked_data, batch_size=8, mode=mode, workers=0)
    x, y, paths = _all(loaders["train"])
    n = len(select_rows(read_manifest(masked_data), "train"))
    assert x.shape == (n, 3, IMAGE_SIZE, IMAGE_SIZE) and x.dtype == torch.float32
    assert set(y.tolist()) == {0.0, 1.0} and y.sum() == n / 2  # every face has its masked twin
    assert all(("/wearing_mask/" in p) == bool(lab) for p, lab in zip(paths, y.tolist()))
    assert -2.2 < x.min() < -1.0 and 1.5 < x.max() < 2.7  # ImageNet-normalised range
    assert len(set(paths)) == n


def test_val_is_deterministic_and_both_paths_agree(masked_data):
    cached = make_loaders(masked_data, 8, "cached", workers=0, splits=("val",))["val"]
    per_image = make_loaders(masked_data, 8, "dataloader", workers=0, splits=("val",))["val"]
    a, ya, pa = _all(cached)
    b, yb, pb = _all(cached, epoch=3)
    c, yc, pc = _all(per_image)
    assert torch.equal(a, b) and pa == pb == pc
    assert torch.allclose(a, c, atol=1e-5)  # centre 112 of the 128 PNG, ImageNet-normalised


def test_train_augmentation_is_seeded_per_epoch(masked_data):
    for mode in ("cached", "dataloader"):
        loader = make_loaders(masked_data, 8, mode, workers=0, splits=("train",))["train"]
        torch.manual_seed(1)
        a, _, pa = _all(loader, epoch=0)
        torch.manual_seed(1)
        b, _, pb = _all(loader, epoch=0)
        c, _, pc = _all(loader, epoch=1)
        assert pa == pb and torch.equal(a, b), mode
        assert pa != pc, mode  # a new order each epoch
        # the same image differs between epochs (augmentation), not only its position
        ia, ic = pa.index(pa[0]), pc.index(pa[0])
        assert not torch.allclose(a[ia], c[ic]), mode


def test_batch_augment_backends_agree_on_the_same_parameters(masked_data):
    cache = build_cache(masked_data, "train", in_memory=True, workers=0)
    u8 = torch.from_numpy(np.ascontiguousarray(cache.images[:16])).permute(0, 3, 1, 2)
    aug = BatchAugment("default")
    p = aug.sample(16, torch.Generator().manual_seed(0))
    a, b = aug._apply_torch(u8, p), aug.apply_cv2(list(u8.permute(0, 2, 3, 1).numpy()), p)
    assert a.shape == b.shape == (16, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert (a - b).abs().mean() < 0.08  # same crop, colour, blur, JPEG; kernels differ in detail
    none = BatchAugment("none")(u8, torch.Generator().manual_seed(0))
    assert none.shape == a.shape


@pytest.mark.parametrize("mode", ["cached", "dataloader"])
def test_corrupt_and_missing_images_are_skipped_and_counted(masked_data, tmp_path, mode):
    data = tmp_path / "data"
    shutil.copytree(masked_data, data, ignore=shutil.ignore_patterns("cache"))
    items = select_rows(read_manifest(data), "train")
    corrupt, missing = items[0].path, items[3].path
    (data / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (data / missing).unlink()
    loader = make_loaders(
        data, 8, mode, workers=2 if mode == "dataloader" else 0, splits=("train",)
    )["train"]
    x, y, paths = _all(loader)
    assert len(paths) == len(items) - 2 and corrupt not in paths and missing not in paths
    assert set(loader.skips.paths) == {corrupt, missing}
    assert "corrupt" in loader.skips.paths[corrupt] or "not an image" in loader.skips.paths[corrupt]
    assert "unreadable" in loader.skips.paths[missing]


def test_cache_is_reused_and_rebuilt_when_data_change(masked_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(masked_data, data, ignore=shutil.ignore_patterns("cache"))
    a = build_cache(data, "val", workers=0)
    b = build_cache(data, "val", workers=0)
    assert a.path == b.path and np.array_equal(a.images, b.images) and a.valid.all()
    first = data / a.items[0].path
    first.write_bytes(first.read_bytes()[:100])  # truncated PNG
    c = build_cache(data, "val", workers=0)
    assert c.path != a.path and not c.valid[0] and a.items[0].path in c.skipped


def test_augmented_grid_shows_both_classes(masked_data):
    import matplotlib.pyplot as plt

    fig = augmented_grid(masked_data, n_per_class=4, repeats=2)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert len(fig.axes) == 6 * 4
    assert sum("wearing_mask" in s and "not" not in s for s in labels) == 3
    plt.close(fig)


def test_bench_loader_prints_three_paths(masked_data, capsys):
    res = bench_loader(data=str(masked_data), batches=2, device="cpu")
    out = capsys.readouterr().out
    assert len(res["images_per_s"]) == 3 and all(v > 0 for v in res["images_per_s"].values())
    assert "baseline ImageFolder+PIL" in out and "cached" in out and "x baseline" in out


def test_cached_cpu_path_reads_the_cache_in_place_and_normalises_exactly(masked_data):
    loader = make_loaders(masked_data, 8, "cached", workers=0, splits=("train",))["train"]
    sel = loader._batches()[1]
    in_place = loader._batch(1, sel).images  # views into the memmap, no gather
    aug, p = loader.augment, loader.augment.sample(len(sel), loader._generator(1))
    gathered = aug.apply_cv2(list(loader._gather(sel).permute(0, 2, 3, 1).numpy()), p)
    assert torch.equal(in_place, gathered)
    # "none": no colour change, no blur/JPEG; the warp is a centre crop at scale 1
    plain = BatchAugment("none")
    u8 = loader._gather(sel)
    p = plain.sample(len(sel), torch.Generator().manual_seed(0))
    p["theta"] = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(len(sel), 2, 3) * (112 / 128)
    p["theta"][:, :, 2] = 0
    x = plain.apply_cv2(list(u8.permute(0, 2, 3, 1).numpy()), p)
    y = center_crop_batch(u8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(x, y, atol=2e-5)  # LUT normalisation == (x/255 - mean)/std
    assert torch.allclose(y * std + mean, u8[..., 8:120, 8:120].float() / 255, atol=1e-6)


@pytest.mark.parametrize("quality", [30, 60, 90])
def test_tensor_jpeg_matches_opencv_encoder_and_decoder(masked_data, quality):
    import cv2

    cache = build_cache(masked_data, "train", in_memory=True, workers=0)
    rgb = np.ascontiguousarray(cache.images[:8, :112, :112])  # 112: not a multiple of 16 x 8
    ours = jpeg_compress(
        torch.from_numpy(rgb).permute(0, 3, 1, 2).float(), torch.full((8,), quality)
    )
    ref = []
    for im in rgb:
        ok, buf = cv2.imencode(".jpg", im[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        ref.append(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])
    ref = torch.from_numpy(np.stack(ref)).permute(0, 3, 1, 2).float()
    orig = torch.from_numpy(rgb).permute(0, 3, 1, 2).float()
    codec_err = (ref - orig).abs().mean()  # what JPEG at this quality changes
    ours_err = (ours - ref).abs().mean()  # how far our codec is from OpenCV's
    assert ours.shape == orig.shape and 0 <= ours.min() and ours.max() <= 255
    assert codec_err > 0.5  # the quality is low enough to matter
    assert ours_err < 0.75 and ours_err < 0.5 * codec_err, (float(ours_err), float(codec_err))
    assert ((ours - orig).abs().mean() / codec_err - 1).abs() < 0.25  # as lossy as the real one


def test_torch_kernel_in_the_loader_is_seeded_per_batch(masked_data):
    """The tensor kernel (what runs on a GPU) through the loader: same epoch, same batches."""
    cache = build_cache(masked_data, "train", workers=0)
    a = CachedLoader(cache, 8, shuffle=True, augment="default", backend="torch", seed=3)
    b = CachedLoader(cache, 8, shuffle=True, augment="default", backend="torch", seed=3)
    xa, ya, _ = _all(a, epoch=1)
    xb, yb, _ = _all(b, epoch=1)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert xa.shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE) and torch.isfinite(xa).all()
    x2, _, _ = _all(a, epoch=2)
    assert not torch.equal(xa, x2)


@pytest.mark.parametrize("backend", ["cv2", "torch"])
def test_background_preparation_gives_the_same_batches_and_stops_cleanly(masked_data, backend):
    """The GPU's prefetch thread (run here on the CPU): same batches in the same order, and a
    consumer that stops early leaves no thread behind. With the tensor kernel it augments
    groups of batches in one pass, each batch with its own parameters and low-res side."""
    import threading

    cache = build_cache(masked_data, "train", workers=0)
    loader = CachedLoader(cache, 4, shuffle=True, augment="default", backend=backend, seed=1)
    loader.set_epoch(1)
    batches = loader._batches()
    inline = list(loader)
    ahead = list(loader._prefetched(batches))
    assert len(inline) == len(ahead) == len(batches) > loader.GROUP  # a group and a partial one
    if backend == "torch":  # the groups really mixed batches of different low-res sides
        draws = [loader.augment.sample(4, loader._generator(k)) for k in range(loader.GROUP)]
        assert len({p["lowres_side"] for p in draws if p["lowres"].any()}) > 1
    for a, b in zip(inline, ahead):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.indices, b.indices)
    it = loader._prefetched(batches)
    next(it)
    it.close()
    assert not any(t.name == "maskdet-prefetch" for t in threading.enumerate())


def test_cpu_kernel_gives_the_same_batch_with_one_or_two_threads(masked_data):
    cache = build_cache(masked_data, "train", in_memory=True, workers=0)
    images = [cache.images[i] for i in range(16)]
    aug = BatchAugment("default")
    p = aug.sample(16, torch.Generator().manual_seed(4))
    one, two = aug.apply_cv2(images, p, threads=1), aug.apply_cv2(images, p, threads=2)
    assert torch.equal(one, two)
    assert bool(p["jpeg"].any() and p["blur"].any())  # the drawn ops ran in both


def _compute_ops(fn) -> int:
    """Tensor operations that compute (a kernel launch each on a GPU), views left out."""
    from torch.utils._python_dispatch import TorchDispatchMode

    views = {"view", "_unsafe_view", "permute", "slice", "select", "unsqueeze", "expand"}
    views |= {"transpose", "alias", "unbind", "split", "split_with_sizes", "detach"}
    views |= {"lift_fresh", "any", "_local_scalar_dense", "as_strided"}
    count = [0]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            count[0] += func.overloadpacket.__name__ not in views
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return count[0]


def test_tensor_kernel_launches_few_operations_and_shares_them_across_a_group(masked_data):
    """On a GPU the host's launch time is the augmentation's cost: count its operations with
    every step drawn (the worst case) for one batch, and per batch in a group of 8."""
    cache = build_cache(masked_data, "train", in_memory=True, workers=0)
    u8 = torch.from_numpy(np.ascontiguousarray(cache.images[:8])).permute(0, 3, 1, 2)
    aug = BatchAugment("default", backend="torch")

    def drawn(seed: int) -> dict:
        p = aug.sample(8, torch.Generator().manual_seed(seed))
        for k in ("lowres", "blur", "jpeg"):
            p[k][:] = True
        return p

    one = _compute_ops(lambda: aug._apply_torch(u8, drawn(0)))
    params = BatchAugment.merge([drawn(s) for s in range(8)])
    group = _compute_ops(lambda: aug._apply_torch(u8.repeat(8, 1, 1, 1), params))
    assert one <= 50, one  # 87 before batching the DCT, precomputing tables and taps
    assert group / 8 <= 8, group  # the low-res step is the only one repeated per batch
