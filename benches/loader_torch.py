#!/usr/bin/env python3
"""PyTorch baseline for `gadms bench loader`: torch DataLoader + PIL + torchvision doing the
IRRA/GA-DMS training transform (method spec section 6.3) over a folder of image files.

Usage:
    python benches/loader_torch.py --data-dir IMAGES_DIR --workers 2 [--images 2048]
        [--batch 4] [--height 384] [--width 128] [--json OUT.json]

Pipeline per image: PIL open + convert("RGB"), Resize((H, W)), RandomHorizontalFlip(0.5),
Pad(10), RandomCrop((H, W)), ToTensor, Normalize(CLIP mean/std),
RandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 3.3), value=CLIP mean) -- exactly IRRA's
`build_transforms(img_size, aug=True)`. `gadms bench loader --torch PYTHON` exports the
packed images as files and runs this script with the same worker count and batch size.

Each worker process is limited to one torch thread, like the Rust loader's one thread per
worker. Timing starts after the first `2 * workers` batches (worker start-up, warm caches) and
covers `--images` images; the images cycle when the folder holds fewer.
"""

import argparse
import json
import os
import time

import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class Files(Dataset):
    def __init__(self, paths, length, transform):
        self.paths, self.length, self.transform = paths, length, transform

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        img = Image.open(self.paths[i % len(self.paths)]).convert("RGB")
        return self.transform(img)


def one_thread(_worker_id):
    torch.set_num_threads(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    exts = (".jpg", ".jpeg", ".png")
    paths = sorted(
        os.path.join(a.data_dir, f) for f in os.listdir(a.data_dir) if f.lower().endswith(exts)
    )
    if not paths:
        raise SystemExit(f"{a.data_dir}: no .jpg/.png images")
    size = (a.height, a.width)
    transform = T.Compose(
        [
            T.Resize(size),
            T.RandomHorizontalFlip(0.5),
            T.Pad(10),
            T.RandomCrop(size),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
            T.RandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 3.3), value=CLIP_MEAN),
        ]
    )
    warm_batches = 2 * max(a.workers, 1)
    timed_batches = -(-a.images // a.batch)
    ds = Files(paths, (warm_batches + timed_batches) * a.batch, transform)
    loader = DataLoader(
        ds,
        batch_size=a.batch,
        shuffle=True,
        num_workers=a.workers,
        worker_init_fn=one_thread if a.workers > 0 else None,
        prefetch_factor=2 if a.workers > 0 else None,
        drop_last=True,
    )
    it = iter(loader)
    for _ in range(warm_batches):
        next(it)
    t0 = time.perf_counter()
    n = 0
    check = 0.0
    for _ in range(timed_batches):
        b = next(it)
        n += b.shape[0]
        check += float(b[0, 0, 0, 0])
    secs = time.perf_counter() - t0
    workers = max(a.workers, 1)
    res = {
        "workers": workers,
        "images": n,
        "seconds": secs,
        "images_per_s": n / secs,
        "images_per_s_per_worker": n / secs / workers,
        "files": len(paths),
        "torch": torch.__version__,
    }
    print(
        f"torch loader: {n} images in {secs:.2f} s = {n / secs:.1f} images/s "
        f"({n / secs / workers:.1f} per worker, {workers} workers)"
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
