#!/usr/bin/env python3
"""PyTorch CPU baseline for the Rust CLIP towers (same architectures, f32).

Usage:
    python benches/torch_baseline.py --threads 2 --batch 4 --iters 5 --json OUT.json [--sdpa]

Vision: ViT-B/16 at 384x128 (IRRA): width 768, 12 layers, 12 heads, patch 16 (no bias),
        24x8 = 192 patches + CLS = 193 tokens, ln_pre, pre-LN blocks, MLP 4x QuickGELU,
        ln_post on ALL tokens, @ proj 768->512.
Text:   width 512, 12 layers, 8 heads, ctx 77, vocab 49408, causal mask, ln_final on ALL
        tokens, @ text_projection 512->512, EOS (argmax id) pooling.

Timed per iteration (after 1 untimed warm-up):
  vision_fwd_bwd_s: forward + backward of loss = sum(projected tokens * fixed random)
  text_fwd_bwd_s:   same for the text tower
  vision_fwd_s:     vision forward only under torch.no_grad()
  vision_embed_s:   gallery embedding: encode_image (CLS feature) of --embed-batch images
                    under torch.inference_mode()
Attention is the explicit softmax(q k^T / sqrt(d) + mask) v by default; --sdpa uses
torch.nn.functional.scaled_dot_product_attention. Weights are random (timing only).
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    def __init__(self, width, heads, sdpa):
        super().__init__()
        self.heads, self.sdpa = heads, sdpa
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x, mask):
        B, S, W = x.shape
        hd = W // self.heads
        q, k, v = self.in_proj(x).reshape(B, S, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        if self.sdpa:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
            if mask is not None:
                s = s + mask
            o = s.softmax(-1) @ v
        return self.out_proj(o.transpose(1, 2).reshape(B, S, W))


class Block(nn.Module):
    def __init__(self, width, heads, sdpa):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, sdpa)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), QuickGELU(), nn.Linear(4 * width, width))

    def forward(self, x, mask=None):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Vision(nn.Module):
    def __init__(self, h=384, w=128, patch=16, width=768, layers=12, heads=12, out=512, sdpa=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch, stride=patch, bias=False)
        n = (h // patch) * (w // patch)
        self.class_embedding = nn.Parameter(torch.randn(width) * 0.02)
        self.positional_embedding = nn.Parameter(torch.randn(n + 1, width) * 0.01)
        self.ln_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList([Block(width, heads, sdpa) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, out) * width ** -0.5)

    def forward(self, img):
        x = self.conv1(img).flatten(2).transpose(1, 2)  # [B, 192, W]
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], 1) + self.positional_embedding
        x = self.ln_pre(x)
        for b in self.blocks:
            x = b(x)
        return self.ln_post(x) @ self.proj  # [B, 193, 512]; features = [:, 0]

    def features(self, img):
        """open_clip's encode_image: every block on every token, then ln_post(CLS) @ proj."""
        x = self.conv1(img).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], 1) + self.positional_embedding
        x = self.ln_pre(x)
        for b in self.blocks:
            x = b(x)
        return self.ln_post(x[:, 0]) @ self.proj  # [B, 512]


class Text(nn.Module):
    def __init__(self, vocab=49408, ctx=77, width=512, layers=12, heads=8, out=512, sdpa=False):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.randn(ctx, width) * 0.01)
        self.blocks = nn.ModuleList([Block(width, heads, sdpa) for _ in range(layers)])
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, out) * width ** -0.5)
        self.register_buffer("mask", torch.full((ctx, ctx), float("-inf")).triu(1), persistent=False)

    def forward(self, text):
        x = self.token_embedding(text) + self.positional_embedding
        for b in self.blocks:
            x = b(x, self.mask)
        tokens = self.ln_final(x) @ self.text_projection  # [B, 77, 512]
        feats = tokens[torch.arange(text.shape[0]), text.argmax(-1)]  # EOS pooling
        return tokens, feats


def timeit(fn, iters):
    fn()  # warm-up
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--sdpa", action="store_true", help="use F.scaled_dot_product_attention")
    ap.add_argument("--embed-batch", type=int, default=64, help="images per gallery-embedding call")
    ap.add_argument("--skip", default="",
                    help="comma list of vision_fwd_bwd,text_fwd_bwd,vision_fwd,vision_embed to skip")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    skip = set(filter(None, a.skip.split(",")))
    B = a.batch
    vis = Vision(sdpa=a.sdpa)
    txt = Text(sdpa=a.sdpa)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {B}, iters {a.iters}, "
          f"attention {'sdpa' if a.sdpa else 'naive'}")
    print(f"vision params {sum(p.numel() for p in vis.parameters()) / 1e6:.2f} M, "
          f"text params {sum(p.numel() for p in txt.parameters()) / 1e6:.2f} M")

    img = torch.randn(B, 3, 384, 128)
    r_img = torch.randn(B, 193, 512)
    text = torch.zeros(B, 77, dtype=torch.long)
    for i in range(B):
        L = min(5 + 17 * i, 75)
        text[i, 0] = 49406
        text[i, 1:1 + L] = torch.randint(1, 49406, (L,))
        text[i, 1 + L] = 49407
    r_txt = torch.randn(B, 77, 512)

    def vision_fwd_bwd():
        vis.zero_grad(set_to_none=True)
        loss = (vis(img) * r_img).sum()
        loss.backward()

    def text_fwd_bwd():
        txt.zero_grad(set_to_none=True)
        tokens, _ = txt(text)
        loss = (tokens * r_txt).sum()
        loss.backward()

    def vision_fwd():
        with torch.no_grad():
            vis(img)

    gallery = torch.randn(a.embed_batch, 3, 384, 128)

    def vision_embed():
        with torch.inference_mode():
            vis.features(gallery)

    res = {"torch_version": torch.__version__, "threads": a.threads, "batch": B,
           "embed_batch": a.embed_batch,
           "attention": "sdpa" if a.sdpa else "naive"}
    for name, fn in (("vision_fwd_bwd", vision_fwd_bwd), ("text_fwd_bwd", text_fwd_bwd),
                     ("vision_fwd", vision_fwd), ("vision_embed", vision_embed)):
        if name in skip:
            res[name + "_s"] = []
            continue
        ts = timeit(fn, a.iters)
        res[name + "_s"] = ts
        print(f"  {name:16s} " + " ".join(f"{t:7.3f}" for t in ts))
    res["median"] = {k[:-2]: (statistics.median(v) if v else None)
                     for k, v in res.items() if k.endswith("_s") and isinstance(v, list)}

    print()
    print(f"{'measurement':18s} {'median s/iter':>14s} {'min':>8s} {'samples/s':>10s}")
    for k, m in res["median"].items():
        if m is None:
            continue
        n = a.embed_batch if k == "vision_embed" else B
        print(f"{k:18s} {m:14.3f} {min(res[k + '_s']):8.3f} {n / m:10.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
