"""JPEG as tensor operations: libjpeg's quantisation tables, the 8x8 block DCT and the codec's
lossy steps on a whole batch (the GPU augmentation's JPEG; the CPU kernel uses OpenCV's codec).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..core.system import device_constant

_JPEG_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_JPEG_CHROMA = (
    ((17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99))
    + (
        (24, 26, 56, 99, 99, 99, 99, 99),
        (47, 66, 99, 99, 99, 99, 99, 99),
    )
    + ((99,) * 8,) * 4
)
"""The JPEG standard's (Annex K) base quantisation tables, as libjpeg scales them by quality."""
_RGB2YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_YCC2RGB = tuple(map(tuple, np.linalg.inv(np.array(_RGB2YCC)).tolist()))
_YCC2RGB_SHIFT = tuple(-128.0 * (r[1] + r[2]) for r in _YCC2RGB)
"""RGB offset of decoded chroma samples, stored around 128 (``Cb``, ``Cr`` minus 128)."""
_DCT8 = np.array(
    [
        [
            math.sqrt((1 if u == 0 else 2) / 8) * math.cos(math.pi * (2 * x + 1) * u / 16)
            for x in range(8)
        ]
        for u in range(8)
    ]
)
"""Orthonormal 8-point DCT-II matrix: JPEG's forward DCT of a block is ``D @ block @ D.T``."""
_DCT64 = tuple(map(tuple, np.kron(_DCT8, _DCT8).T.tolist()))
"""The 2-D block DCT as one 64x64 matrix on row-major flattened blocks: ``coef = block @ K``."""


def jpeg_tables(quality: np.ndarray) -> np.ndarray:
    """libjpeg's quantisation tables ``(B, 2, 64)`` (luma, chroma; row-major 8x8) for
    qualities 1..100."""
    q = np.clip(np.asarray(quality, dtype=np.float64), 1, 100)
    scale = np.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q).reshape(-1, 1, 1)
    base = np.array([_JPEG_LUMA, _JPEG_CHROMA], dtype=np.float64).reshape(1, 2, 64)
    return np.clip(np.floor((base * scale + 50) / 100), 1, 255)


def _to_blocks(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> row-major flattened 8x8 blocks ``(B, C*H/8*W/8, 64)``."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(b, -1, 64)


def _from_blocks(blocks: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    b = blocks.shape[0]
    return blocks.reshape(b, c, h // 8, w // 8, 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


def _colour_map(x: torch.Tensor, matrix: tuple, shift: tuple) -> torch.Tensor:
    """``matrix @ pixel + shift`` for every pixel of ``(B, 3, H, W)`` ``x``, in one batched
    matrix product (a 1x1 convolution is several times slower on a CPU)."""
    b, c, h, w = x.shape
    m = device_constant(matrix, x.device).expand(b, c, c)
    out = torch.baddbmm(device_constant(shift, x.device).view(c, 1), m, x.reshape(b, c, h * w))
    return out.view(b, c, h, w)


def jpeg_with_tables(img: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Baseline JPEG (4:2:0) of RGB ``img`` in 0..255, ``(B, 3, H, W)`` float, with per-image
    quantisation ``tables`` ``(B, 2, 64)`` (:func:`jpeg_tables`) on the image's device.

    The lossy steps of the codec are computed exactly, as batched tensor operations: 8-bit
    YCbCr, 2x2 chroma averaging, the 8x8 DCT of luma and chroma blocks together (one 64x64
    matrix product each way), quantisation, 8-bit decoded samples, bilinear ("fancy") chroma
    upsampling, RGB. Only the lossless entropy coding is left out. About 25 operations per
    batch, whatever its size (each one a kernel launch on a GPU)."""
    b, _, h, w = img.shape
    dev = img.device
    ph, pw = -h % 16, -w % 16
    x = img.round()  # the encoder sees 8-bit pixels
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    hp, wp = h + ph, w + pw
    ycc = _colour_map(x, _RGB2YCC, (-128.0, 0.0, 0.0)).round()  # 8-bit, centred on 0
    chroma = F.avg_pool2d(ycc[:, 1:], 2)
    blocks = torch.cat([_to_blocks(ycc[:, :1]), _to_blocks(chroma)], 1)
    n_luma = hp * wp // 64
    table = torch.cat(
        [
            tables[:, :1].expand(b, n_luma, 64),
            tables[:, 1:].expand(b, blocks.shape[1] - n_luma, 64),
        ],
        1,
    )
    k = device_constant(_DCT64, dev)
    coef = torch.round(torch.matmul(blocks, k) / table) * table
    # inverse DCT, level shift back (+128 on every sample = +1024 on the DC coefficient)
    dec = (
        torch.addmm(device_constant((128.0,), dev), coef.view(-1, 64), k.T).round_().clamp_(0, 255)
    )
    dec = dec.view(b, -1, 64)
    y = _from_blocks(dec[:, :n_luma], 1, hp, wp)
    c = _from_blocks(dec[:, n_luma:], 2, hp // 2, wp // 2)
    c = F.interpolate(c, scale_factor=2, mode="bilinear", align_corners=False).round_()
    rgb = _colour_map(torch.cat([y, c], 1), _YCC2RGB, _YCC2RGB_SHIFT)
    return rgb.round_().clamp_(0, 255)[:, :, :h, :w]


def jpeg_compress(img: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Baseline JPEG of RGB ``img`` in 0..255 (``(B, 3, H, W)`` float) at per-image ``quality``
    (libjpeg's tables): :func:`jpeg_with_tables`.

    Agrees with OpenCV's encoder + decoder to about half a grey level on average (the
    integer DCT's rounding), against 1.5-4 levels that the codec itself changes (tested)."""
    tables = jpeg_tables(quality.detach().cpu().numpy())
    return jpeg_with_tables(img, torch.from_numpy(tables).float().to(img.device))
