"""Checks a `gadms export --format hf` folder with transformers itself (not run by the tests;
Python is for checks and fixtures only):

    gadms export --weights W --format hf --out DIR
    gadms embed --weights W --texts CAPTIONS.txt --out EMB.safetensors IMAGE...
    python scripts/check_hf_export.py DIR W CAPTIONS.txt EMB.safetensors IMAGE...

It loads `CLIPProcessor.from_pretrained(DIR)` and `CLIPModel.from_pretrained(DIR)`, compares the
token ids with `gadms tokenize` up to EOT (Hugging Face pads with EOT, gadms with 0), the text
features with gadms' `text_embeds` and the image features (with
`interpolate_pos_encoding=True`, since HF stores the position grid square) with `image_embeds`.
Needs `pip install torch transformers pillow safetensors` and `gadms` on PATH or GADMS=path.
"""
import json
import os
import subprocess
import sys

import safetensors.torch as st
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor


def features(out):
    return getattr(out, "pooler_output", out)


def main():
    folder, _weights, captions, emb, *images = sys.argv[1:]
    gadms = os.environ.get("GADMS", "gadms")
    caps = open(captions, encoding="utf-8").read().strip().split("\n")
    proc = CLIPProcessor.from_pretrained(folder)
    model = CLIPModel.from_pretrained(folder).eval()
    enc = proc(text=caps, padding="max_length", max_length=77, return_tensors="pt")
    out = subprocess.run([gadms, "tokenize", "--texts", captions], capture_output=True, text=True, check=True)
    ours = [json.loads(line) for line in out.stdout.strip().split("\n")]
    upto = lambda r: r[: r.index(49407) + 1]
    same = [upto(a) == upto(b) for a, b in zip(enc["input_ids"].tolist(), ours)]
    print(f"token ids equal up to EOT: {sum(same)}/{len(same)}")
    g = st.load_file(emb)
    px = proc(images=[Image.open(p).convert("RGB") for p in images], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        t = features(model.get_text_features(input_ids=enc["input_ids"]))
        i = features(model.get_image_features(pixel_values=px, interpolate_pos_encoding=True))
    t = t / t.norm(dim=-1, keepdim=True)
    i = i / i.norm(dim=-1, keepdim=True)
    print(f"text features: max |HF - gadms| = {(t - g['text_embeds']).abs().max().item():.2e}")
    print(f"image features: cosine HF vs gadms = {(i * g['image_embeds']).sum(-1).tolist()}")


if __name__ == "__main__":
    main()
