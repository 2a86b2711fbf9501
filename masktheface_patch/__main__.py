"""``python -m masktheface_patch --masktheface-dir D IN_DIR OUT_DIR``: mask every image in a folder.

The batch driver of stage 02 (:func:`maskdet.synthesis.masking.mask_files`) with the ``masktheface``
backend; the adapter itself (``masktheface_patch/__init__.py``) never imports the driver.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

from maskdet.synthesis.masking import mask_files


def mask_folder(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    masktheface_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, str]]:
    """Mask every file under ``in_dir`` into ``out_dir`` (same relative path, ``.png``).

    Returns one record per input file (also written to ``out_dir/records.csv``): status
    ok / failed / dropped / skipped with a reason; nothing is dropped silently.
    """
    return mask_files(
        in_dir,
        out_dir,
        backend="masktheface",
        masktheface_dir=masktheface_dir,
        workers=workers,
        seed=seed,
        progress=progress,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m masktheface_patch", description=__doc__)
    p.add_argument("in_dir")
    p.add_argument("out_dir")
    p.add_argument(
        "--masktheface-dir", default=None, help="upstream checkout (default: $MASKTHEFACE_DIR)"
    )
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    records = mask_folder(a.in_dir, a.out_dir, a.masktheface_dir, a.workers, a.seed)
    print(dict(Counter(r["status"] for r in records)), f"records: {a.out_dir}/records.csv")
    for r in records:
        if r["status"] != "ok":
            print(f"  {r['status']:8} {r['input']}: {r['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
