"""``python -m masktheface_patch --masktheface-dir D IN_DIR OUT_DIR``: mask every image in a folder."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from . import mask_folder


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
