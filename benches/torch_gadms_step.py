#!/usr/bin/env python3
"""PyTorch implementation of one GA-DMS pretraining step, for throughput comparison with the
Rust step (`src/train/gadms.rs::train_step`; docs/method.md §2.2, §3.2, §4, §5, §6.1).

Usage:
    python benches/torch_gadms_step.py --device cpu --preset tiny --batch 8 --steps 3 --warmup 1
    python benches/torch_gadms_step.py --device cuda --preset vit-b-16 --batch 128 \
        --steps 10 --warmup 3 --modes eager-f32,amp-bf16,tf32 [--compile]

Self-contained: only torch and the standard library. The model code
is copied from benches/torch_baseline.py (CLIP towers), fixtures/mtp/make.py (IRRA
cross-modal decoder + mlm head), fixtures/gass/make.py (the port of the official
GASS code) and fixtures/sdm/make.py (IRRA compute_sdm, verbatim).

The step (one iteration, same order as the Rust step):
  tokens = visual(images)                    [B, SEQ, EMBED]  ln_post + proj on all tokens
  cls    = tokens[:, 0]
  S      = GASS(text, cls.detach(), clean)   [B, 77]  own autograd graph; written into a
                                                      device score table (rows = sample index)
  L_sdm  = SDM(cls, eos(text(noise-masked)), pids = arange(B), logit scale 50, eps 1e-8)
  L_mtp  = CE(mlm_head(decoder(text(info-masked) [B,77,EMBED], tokens))[labelled], labels)
  L      = L_sdm + 0.4 * L_mtp;  backward;  global grad norm;  Adam step
Adam: torch.optim.Adam(lr 1e-5, betas (0.9, 0.999), eps 1e-3, weight_decay 4e-5) = coupled L2,
one group for every parameter (§6.1), fused implementation by default (--adam). Weights are random (CLIP / IRRA initialisation); the
batch is synthetic and fixed, built once on the device.

Modes: eager-f32 (TF32 off), amp-bf16 (torch.autocast bf16 around the forward incl. GASS;
backward and optimiser outside), tf32 (eager f32 with cuBLAS + cuDNN TF32 on; CUDA only).

Output: one JSON line per mode on stdout; everything else on stderr.
GASS fraction: a separate timed loop runs only GASS (given a fixed CLS from a no-grad visual
pass) with the same warm-up/steps; gass_fraction = its mean time / mean step time.
"""

import argparse
import gc
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SOT, EOT, MASK = 49406, 49407, 49405
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# nn/src/clip.rs VITB16_SPEC / TINY_SPEC, nn/src/mtp.rs MtpViTB16 / MtpTiny. MLP = 4x width.
PRESETS = {
    "vit-b-16": dict(img_h=384, img_w=128, patch=16, v_width=768, v_layers=12, v_heads=12,
                     embed=512, vocab=49408, ctx=77, t_width=512, t_layers=12, t_heads=8,
                     m_heads=8, m_layers=4),
    "tiny": dict(img_h=64, img_w=32, patch=16, v_width=64, v_layers=2, v_heads=2,
                 embed=32, vocab=49408, ctx=77, t_width=64, t_layers=2, t_heads=2,
                 m_heads=2, m_layers=1),  # gadms MtpTiny: 1 block (nn/src/mtp.rs)
}
# the MTP decoder width is the joint embedding width (IRRA; the Rust GaDmsForward requires it)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- model
# (benches/torch_baseline.py; parameter names as open_clip / IRRA)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class MHA(nn.Module):
    """Multi-head attention with nn.MultiheadAttention's parameter layout (in_proj_weight
    [3W, W], in_proj_bias, out_proj), batch-first. `kv=None`: self-attention."""

    def __init__(self, width, heads, sdpa):
        super().__init__()
        self.heads, self.sdpa = heads, sdpa
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x, kv=None, causal=False):
        B, S, W = x.shape
        H, hd = self.heads, W // self.heads
        if kv is None:
            q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            q = F.linear(x, self.in_proj_weight[:W], self.in_proj_bias[:W])
            k, v = F.linear(kv, self.in_proj_weight[W:], self.in_proj_bias[W:]).chunk(2, dim=-1)
        Sk = k.shape[1]
        q = q.reshape(B, S, H, hd).transpose(1, 2)
        k = k.reshape(B, Sk, H, hd).transpose(1, 2)
        v = v.reshape(B, Sk, H, hd).transpose(1, 2)
        if self.sdpa:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        else:
            s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
            if causal:
                s = s + torch.full((S, Sk), float("-inf"), device=s.device, dtype=s.dtype).triu(1)
            o = s.softmax(-1) @ v
        return self.out_proj(o.transpose(1, 2).reshape(B, S, W))


class Block(nn.Module):
    """CLIP ResidualAttentionBlock (pre-LN, MLP 4x QuickGELU)."""

    def __init__(self, width, heads, sdpa):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = MHA(width, heads, sdpa)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(self, x, causal=False):
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))


def init_blocks(blocks, width, layers):
    """open_clip / IRRA transformer init."""
    attn_std = width ** -0.5
    proj_std = width ** -0.5 * (2 * layers) ** -0.5
    fc_std = (2 * width) ** -0.5
    for b in blocks:
        nn.init.normal_(b.attn.in_proj_weight, std=attn_std)
        nn.init.normal_(b.attn.out_proj.weight, std=proj_std)
        nn.init.normal_(b.mlp.c_fc.weight, std=fc_std)
        nn.init.normal_(b.mlp.c_proj.weight, std=proj_std)


class Vision(nn.Module):
    """IRRA ViT: conv patchify (no bias), CLS, positional, ln_pre, blocks, ln_post on ALL
    tokens, @ proj -> [B, SEQ, EMBED]."""

    def __init__(self, c, sdpa):
        super().__init__()
        W, p = c["v_width"], c["patch"]
        n = (c["img_h"] // p) * (c["img_w"] // p)
        scale = W ** -0.5
        self.conv1 = nn.Conv2d(3, W, p, stride=p, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(W))
        self.positional_embedding = nn.Parameter(scale * torch.randn(n + 1, W))
        self.ln_pre = nn.LayerNorm(W)
        self.blocks = nn.ModuleList([Block(W, c["v_heads"], sdpa) for _ in range(c["v_layers"])])
        self.ln_post = nn.LayerNorm(W)
        self.proj = nn.Parameter(scale * torch.randn(W, c["embed"]))
        init_blocks(self.blocks, W, c["v_layers"])

    def forward(self, img):
        x = self.conv1(img).flatten(2).transpose(1, 2)  # [B, n, W]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], 1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        for b in self.blocks:
            x = b(x)
        return self.ln_post(x) @ self.proj


class Text(nn.Module):
    """CLIP text tower: causal blocks, ln_final, @ text_projection. `eos` given: the EOS rows
    only [B, EMBED] (selected before ln_final, the same values); else all tokens."""

    def __init__(self, c, sdpa):
        super().__init__()
        W, S = c["t_width"], c["ctx"]
        self.token_embedding = nn.Embedding(c["vocab"], W)
        self.positional_embedding = nn.Parameter(torch.empty(S, W))
        self.blocks = nn.ModuleList([Block(W, c["t_heads"], sdpa) for _ in range(c["t_layers"])])
        self.ln_final = nn.LayerNorm(W)
        self.text_projection = nn.Parameter(torch.empty(W, c["embed"]))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=W ** -0.5)
        init_blocks(self.blocks, W, c["t_layers"])
        self.register_buffer("attn_mask", torch.full((S, S), float("-inf")).triu(1), persistent=False)

    def embed(self, ids):
        return self.token_embedding(ids) + self.positional_embedding

    def forward(self, ids, eos=None):
        x = self.embed(ids)
        for b in self.blocks:
            x = b(x, causal=True)
        if eos is not None:
            x = x[torch.arange(x.shape[0], device=x.device), eos]
        return self.ln_final(x) @ self.text_projection


class MtpDecoder(nn.Module):
    """IRRA cross_former + mlm_head (fixtures/mtp/make.py): q = ln_pre_t(text),
    k = v = ln_pre_i(image), cross-attention WITHOUT residual, 4 pre-LN blocks, ln_post,
    dense -> QuickGELU -> LN -> fc(vocab). IRRA init."""

    def __init__(self, c, sdpa):
        super().__init__()
        W, L = c["embed"], c["m_layers"]
        self.cross_attn = MHA(W, c["m_heads"], sdpa)
        self.cross_modal_transformer = nn.ModuleList([Block(W, c["m_heads"], sdpa) for _ in range(L)])
        self.ln_pre_t = nn.LayerNorm(W)
        self.ln_pre_i = nn.LayerNorm(W)
        self.ln_post = nn.LayerNorm(W)
        self.mlm_head = nn.Sequential()
        self.mlm_head.add_module("dense", nn.Linear(W, W))
        self.mlm_head.add_module("gelu", QuickGELU())
        self.mlm_head.add_module("ln", nn.LayerNorm(W))
        self.mlm_head.add_module("fc", nn.Linear(W, c["vocab"]))
        scale = W ** -0.5
        proj_std = scale * (2 * L) ** -0.5
        fc_std = (2 * W) ** -0.5
        init_blocks(self.cross_modal_transformer, W, L)
        nn.init.normal_(self.cross_attn.in_proj_weight, std=scale)
        nn.init.normal_(self.cross_attn.out_proj.weight, std=proj_std)
        nn.init.normal_(self.mlm_head.dense.weight, std=fc_std)
        nn.init.normal_(self.mlm_head.fc.weight, std=proj_std)

    def forward(self, text_tokens, image_tokens, idx):
        """Logits [N, V] at the labelled rows `idx` (flat indices into B*77), as the Rust
        `forward_masked`: the same values/gradients as IRRA's full [B, 77, V] logits."""
        # IRRA applies ln_pre_i to k and to v separately: the same function.
        x = self.cross_attn(self.ln_pre_t(text_tokens), kv=self.ln_pre_i(image_tokens))
        for b in self.cross_modal_transformer:
            x = b(x)
        x = self.ln_post(x)
        rows = x.reshape(-1, x.shape[-1]).index_select(0, idx)
        return self.mlm_head(rows)


class GaDms(nn.Module):
    def __init__(self, c, sdpa):
        super().__init__()
        self.visual = Vision(c, sdpa)
        self.text = Text(c, sdpa)
        self.mtp = MtpDecoder(c, sdpa)


# --------------------------------------------------------------------------- SDM
# fixtures/sdm/make.py: IRRA objectives.compute_sdm, verbatim


def compute_sdm(image_fetures, text_fetures, pid, logit_scale, image_id=None, factor=0.3, epsilon=1e-8):
    """
    Similarity Distribution Matching
    """
    batch_size = image_fetures.shape[0]
    pid = pid.reshape((batch_size, 1))  # make sure pid size is [batch_size, 1]
    pid_dist = pid - pid.t()
    labels = (pid_dist == 0).float()

    if image_id != None:  # noqa: E711
        image_id = image_id.reshape((-1, 1))
        image_id_dist = image_id - image_id.t()
        image_id_mask = (image_id_dist == 0).float()
        labels = (labels - image_id_mask) * factor + image_id_mask

    image_norm = image_fetures / image_fetures.norm(dim=1, keepdim=True)
    text_norm = text_fetures / text_fetures.norm(dim=1, keepdim=True)

    t2i_cosine_theta = text_norm @ image_norm.t()
    i2t_cosine_theta = t2i_cosine_theta.t()

    text_proj_image = logit_scale * t2i_cosine_theta
    image_proj_text = logit_scale * i2t_cosine_theta

    # normalize the true matching distribution
    labels_distribute = labels / labels.sum(dim=1)

    i2t_pred = F.softmax(image_proj_text, dim=1)
    i2t_loss = i2t_pred * (F.log_softmax(image_proj_text, dim=1) - torch.log(labels_distribute + epsilon))
    t2i_pred = F.softmax(text_proj_image, dim=1)
    t2i_loss = t2i_pred * (F.log_softmax(text_proj_image, dim=1) - torch.log(labels_distribute + epsilon))

    loss = torch.mean(torch.sum(i2t_loss, dim=1)) + torch.mean(torch.sum(t2i_loss, dim=1))

    return loss


# --------------------------------------------------------------------------- GASS
# fixtures/gass/make.py (port of the official GA-DMS code), batch-first [B, S, W]
# instead of LND, with two arithmetic-preserving changes that the Rust code makes too:
#   * one backward of trace(C) = sum_b C[b,b] to every o_l (one torch.autograd.grad call with
#     all o_l as inputs) instead of one autograd.grad(C, o_l, grad_outputs=I_B) per layer;
#     text b depends only on row b, so the gradients are identical (the fixture checks this);
#   * the EOS rows are gathered directly instead of via q[eos][:, :, :] + diagonal.


def multi_scale_pooling(x, scales):
    """official multi_scale_pooling over the sequence axis of x [B, S, W]: per scale c, mean
    of non-overlapping c-windows (+ one remainder window), linear resize back to S
    (align_corners=False); mean over the scales. Scale 1 is the identity."""
    B, S, W = x.shape
    outs = []
    for c in scales:
        if c == 1:
            outs.append(x)
            continue
        full = S // c
        sl = full * c
        pooled = x[:, :sl].reshape(B, full, c, W).mean(dim=2)
        if sl < S:
            pooled = torch.cat([pooled, x[:, sl:].mean(dim=1, keepdim=True)], dim=1)
        up = F.interpolate(pooled.transpose(1, 2), size=S, mode="linear", align_corners=False)
        outs.append(up.transpose(1, 2))
    return outs[0] if len(outs) == 1 else torch.stack(outs).mean(dim=0)


def enhanced_sim_qk(q, k, eos, scales):
    """official enhanced_sim_qk: cos(MSP(q)[eos_b], MSP(k)[n]) for all n, per-sample min-max."""
    ar = torch.arange(q.shape[0], device=q.device)
    q_cls = F.normalize(multi_scale_pooling(q, scales)[ar, eos], dim=-1)  # [B, W]
    k_n = F.normalize(multi_scale_pooling(k, scales), dim=-1)  # [B, S, W]
    cosine_qk = torch.bmm(k_n, q_cls.unsqueeze(-1)).squeeze(-1)  # [B, S]
    mn = cosine_qk.min(dim=1, keepdim=True)[0]
    mx = cosine_qk.max(dim=1, keepdim=True)[0]
    return (cosine_qk - mn) / (mx - mn + 1e-8)


def gass_scores(text, cls, ids, eos, n_layers, scales, norm):
    """GASS scores [B, 77] of the clean captions `ids` for the image CLS features `cls`
    (detached). A: blocks 0..L-n normally (no grad), blocks L-n..L re-run with ONE attention
    head over all W dims; t = normalize(ln_final(h)[eos] @ P); grads of sum_b cos(v_b, t_b)
    w.r.t. the pre-out_proj attention outputs o_l. B: per-layer maps. C: ReLU(sum), mask,
    batch min-max (no host sync: torch.where)."""
    B, S = ids.shape
    blocks = text.blocks
    L = len(blocks)
    n = min(n_layers, L)  # Python's resblocks[-n:] clamps too (the Rust code does the same)
    first = L - n
    ar = torch.arange(B, device=ids.device)
    with torch.no_grad():
        h = text.embed(ids)
        for blk in blocks[:first]:
            h = blk(h, causal=True)
    # A.2 surrogate pass (official clip_encode_text_dense + attention_layer(num_heads=1))
    W = h.shape[-1]
    scaling = float(W) ** -0.5
    saved, outs = [], []
    for blk in blocks[first:]:
        x_in = h
        x = blk.ln_1(x_in)
        q, k, v = F.linear(x, blk.attn.in_proj_weight, blk.attn.in_proj_bias).chunk(3, dim=-1)
        attn = torch.bmm(q * scaling, k.transpose(1, 2)) + text.attn_mask
        attn = F.softmax(attn, dim=-1)
        o = torch.bmm(attn.to(v.dtype), v)  # [B, S, W]: the attention output before out_proj
        saved.append((q, k, v, attn))
        outs.append(o)
        h = x_in + blk.attn.out_proj(o)
        h = h + blk.mlp(blk.ln_2(h))
    t = text.ln_final(h[ar, eos]) @ text.text_projection
    objective = (F.normalize(t.float(), dim=-1) * F.normalize(cls.detach().float(), dim=-1)).sum()
    grads = torch.autograd.grad(objective, outs)  # only o_l's gradients, no parameter grads
    # B: per-layer maps (official grad_eclip_enhanced_batched), f32 (autocast off)
    with torch.no_grad(), torch.autocast(device_type=ids.device.type, enabled=False):
        pos = torch.arange(S, device=ids.device)
        mask = ((pos[None, :] > 0) & (pos[None, :] < eos[:, None])).float()  # [B, S]
        total = torch.zeros(B, S, device=ids.device, dtype=torch.float32)
        for (q, k, v, attn), g in zip(saved, grads):
            q, k, v, attn, g = q.float(), k.float(), v.float(), attn.float(), g.float()
            g_eos = g[ar, eos]  # [B, W]
            w = enhanced_sim_qk(q, k, eos, scales)  # [B, S]
            importance_raw = torch.bmm(v, g_eos.unsqueeze(-1)).squeeze(-1) * w  # sum_d g*v*w
            a = attn[ar, eos]  # EOS attention row [B, S]
            if norm == "official":
                z = importance_raw.sum(dim=1, keepdim=True)
            else:  # paper Eq. 3 (the Rust default, GassNorm::Paper)
                z = (a * mask).sum(dim=1, keepdim=True)
            total += (importance_raw * mask) * (a * mask) / (z + 1e-8)
        emap = F.relu(total) * mask
        lo, hi = emap.min(), emap.max()
        scores = torch.where(hi > lo, (emap - lo) / (hi - lo), torch.zeros_like(emap))
    return scores


# --------------------------------------------------------------------------- data


def make_batch(c, B, device, seed):
    """Synthetic batch, built once: CLIP-normalised random images, captions of 10..40 random
    word pieces (ids 1..49404) between SOT and EOT, zero padding; a noise-masked and an
    informative-masked copy (each word piece replaced by [MASK] with p = 0.15, at least one
    per row), the informative copy's labels; pids = arange(B)."""
    g = torch.Generator().manual_seed(seed)
    S = c["ctx"]
    img = torch.rand(B, 3, c["img_h"], c["img_w"], generator=g)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    img = (img - mean) / std
    ids = torch.zeros(B, S, dtype=torch.long)
    for b in range(B):
        n = int(torch.randint(10, 41, (1,), generator=g))
        ids[b, 0] = SOT
        ids[b, 1:1 + n] = torch.randint(1, MASK, (n,), generator=g)
        ids[b, 1 + n] = EOT

    def masked_copy():
        word = (ids > 0) & (ids < MASK)
        sel = (torch.rand(B, S, generator=g) < 0.15) & word
        for b in range(B):
            if not sel[b].any():
                sel[b, 1] = True  # "at least mask 1": the first word piece
        out = torch.where(sel, torch.full_like(ids, MASK), ids)
        labels = torch.where(sel, ids, torch.zeros_like(ids))
        return out, labels

    noise, _ = masked_copy()
    info, labels = masked_copy()
    flat = labels.reshape(-1)
    idx = flat.nonzero().squeeze(1)  # labelled rows, computed once (no per-step host sync)
    d = dict(images=img, ids_clean=ids, eos=ids.argmax(-1), ids_noise=noise, ids_info=info,
             mtp_idx=idx, mtp_targets=flat[idx], pids=torch.arange(B),
             sample_index=torch.arange(B))
    return {k: v.to(device) for k, v in d.items()}


# --------------------------------------------------------------------------- step


def forward_losses(model, fwd, data, score_table, a):
    """The forward of the step; returns (loss, l_sdm, l_mtp) as device tensors."""
    tokens = fwd["visual"](data["images"])  # [B, SEQ, EMBED]
    cls = tokens[:, 0]
    s = gass_scores(model.text, cls.detach(), data["ids_clean"], data["eos"],
                    a.gass_layers, a.gass_scales, a.gass_norm)
    score_table.index_copy_(0, data["sample_index"], s.to(score_table.dtype))
    t_noise = fwd["text"](data["ids_noise"], data["eos"])  # [B, EMBED]
    l_sdm = compute_sdm(cls, t_noise, data["pids"], a.logit_scale)
    t_info = fwd["text"](data["ids_info"])  # [B, 77, EMBED]
    logits = fwd["mtp"](t_info, tokens, data["mtp_idx"])  # [N, V]
    l_mtp = F.cross_entropy(logits.float(), data["mtp_targets"])
    return l_sdm + a.beta * l_mtp, l_sdm, l_mtp


def set_tf32(on):
    # legacy flags only (mixing them with the new fp32_precision API is an error in torch >= 2.9)
    try:
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
    except Exception as e:  # pragma: no cover
        log(f"warning: could not set TF32 flags to {on}: {e}")


def cpu_has_bf16():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_mode(mode, a, c, data, device, dev_name):
    base = {"impl": "torch", "mode": mode, "preset": a.preset, "batch": a.batch, "steps": a.steps,
            "warmup": a.warmup, "device": dev_name, "torch": torch.__version__}
    cuda = device.type == "cuda"
    if mode == "amp-bf16":
        set_tf32(False)
        ac = lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)  # noqa: E731
    elif mode in ("eager-f32", "tf32"):
        set_tf32(mode == "tf32")
        ac = lambda: torch.autocast(device_type=device.type, enabled=False)  # noqa: E731
    else:
        raise ValueError(f"unknown mode {mode!r}")

    torch.manual_seed(a.seed)
    with torch.device(device):
        model = GaDms(c, sdpa=a.attention == "sdpa")
    model.train()
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)
    impl = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False},
            "default": {}}[a.adam]
    opt = torch.optim.Adam(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-3, weight_decay=4e-5, **impl)
    score_table = torch.zeros(a.batch, c["ctx"], device=device)
    fwd = {"visual": model.visual, "text": model.text, "mtp": model.mtp}
    compiled = False
    if a.compile:
        try:
            fwd = {k: torch.compile(v) for k, v in fwd.items()}
            compiled = True
        except Exception as e:
            log(f"[{mode}] torch.compile unavailable ({type(e).__name__}: {e}); running eager")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    log(f"[{mode}] {n_params / 1e6:.2f} M parameters, batch {a.batch}, "
        f"{int(data['mtp_idx'].numel())} labelled MTP tokens, attention {a.attention}"
        + (", compiled" if compiled else ""))

    def step(i, show):
        with ac():
            loss, l_sdm, l_mtp = forward_losses(model, fwd, data, score_table, a)
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        gnorm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if show:
            if i == 0:
                none = [n for n, p in model.named_parameters() if p.grad is None]
                zero = [n for n, p in model.named_parameters()
                        if p.grad is not None and not bool(p.grad.abs().max() > 0)]
                log(f"[{mode}] grad flow: {len(params) - len(none) - len(zero)}/{len(params)} "
                    f"parameters with non-zero gradient; none: {none or '-'}; all-zero: {zero or '-'}")
            log(f"[{mode}] step {i:3d}: loss {loss.item():.6f} sdm {l_sdm.item():.6f} "
                f"mtp {l_mtp.item():.6f} grad_norm {gnorm.item():.4e}")
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    # warm-up (compilation happens here, so a compiled run always gets at least one untimed
    # step); fall back to eager if compile fails
    i = 0
    for _ in range(max(a.warmup, 1 if compiled else 0)):
        try:
            step(i, a.log_loss)
        except Exception as e:
            if not compiled:
                raise
            log(f"[{mode}] torch.compile failed ({type(e).__name__}: {str(e)[:300]}); running eager")
            opt.zero_grad(set_to_none=True)
            fwd = {"visual": model.visual, "text": model.text, "mtp": model.mtp}
            compiled = False
            step(i, a.log_loss)
        i += 1
    sync(device)
    losses = []
    t0 = time.perf_counter()
    for _ in range(a.steps):
        losses.append(step(i, a.log_loss))
        i += 1
    sync(device)
    step_s = (time.perf_counter() - t0) / max(a.steps, 1)
    final_loss = float(losses[-1]) if losses else None

    # GASS alone: same warm-up / steps, fixed CLS from a no-grad visual pass
    with torch.no_grad(), ac():
        cls = fwd["visual"](data["images"])[:, 0].detach()

    def gass_only():
        with ac():
            s = gass_scores(model.text, cls, data["ids_clean"], data["eos"],
                            a.gass_layers, a.gass_scales, a.gass_norm)
        score_table.index_copy_(0, data["sample_index"], s.to(score_table.dtype))

    for _ in range(a.warmup):
        gass_only()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        gass_only()
    sync(device)
    gass_s = (time.perf_counter() - t0) / max(a.steps, 1)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if cuda else None
    # What the caching allocator held at its peak (allocated + cached free blocks).
    reserved = torch.cuda.max_memory_reserved(device) / 2 ** 20 if cuda else None
    out = dict(base)
    out.update(step_s=step_s, pairs_per_s=a.batch / step_s, peak_mem_mib=peak,
               peak_reserved_mib=reserved,
               gass_fraction=gass_s / step_s, gass_s=gass_s, compiled=compiled,
               attention=a.attention, adam=a.adam, loss=final_loss)
    del model, opt, params, fwd, score_table, cls
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--preset", default="vit-b-16", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--modes", default="eager-f32,amp-bf16,tf32")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--compile", action="store_true", help="torch.compile the towers and decoder")
    ap.add_argument("--attention", default="sdpa", choices=["sdpa", "naive"],
                    help="model attention (GASS's single-head surrogate is always explicit)")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--adam", default="fused", choices=["fused", "foreach", "for-loop", "default"],
                    help="torch.optim.Adam implementation (same update; default: fused, one kernel "
                         "per step like the Rust optimiser's fused per-tensor loop; 'default' = "
                         "torch's own choice: foreach on CUDA, for-loop on CPU)")
    ap.add_argument("--beta", type=float, default=0.4, help="MTP weight")
    ap.add_argument("--logit-scale", type=float, default=50.0)
    ap.add_argument("--gass-layers", type=int, default=8)
    ap.add_argument("--gass-scales", default="1,2")
    ap.add_argument("--gass-norm", default="paper", choices=["paper", "official"],
                    help="layer-map normalisation (Rust default: paper)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpu-amp", action="store_true",
                    help="run amp-bf16 on a CPU without native bf16 too (slow emulation)")
    ap.add_argument("--log-loss", action="store_true",
                    help="print every step's losses and a grad-flow summary on stderr (syncs; sanity only)")
    a = ap.parse_args()
    a.gass_scales = [int(s) for s in a.gass_scales.split(",") if s]
    if a.gass_layers < 1 or not a.gass_scales or min(a.gass_scales) < 1:
        ap.error("GASS needs layers >= 1 and scales >= 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    c = PRESETS[a.preset]
    try:
        device = torch.device(a.device)
    except RuntimeError as e:
        ap.error(f"--device {a.device!r}: {e}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            ap.error("CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
        dev_name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        dev_name = "cpu"
    else:
        ap.error(f"--device must be cpu, cuda or cuda:N, not {a.device!r}")
    log(f"torch {torch.__version__}, device {dev_name}, threads {torch.get_num_threads()}, "
        f"preset {a.preset}, batch {a.batch}, steps {a.steps} after {a.warmup} warm-up")
    n = min(a.gass_layers, c["t_layers"])
    log(f"GASS: blocks 0..{c['t_layers'] - n} normally, the last {n} of {c['t_layers']} re-run single-head"
        + (f" (--gass-layers {a.gass_layers} clamped to the tower depth)" if n < a.gass_layers else "")
        + f"; scales {a.gass_scales}, {a.gass_norm} normalisation")
    data = make_batch(c, a.batch, device, a.seed)

    for mode in [m for m in a.modes.split(",") if m]:
        if mode not in ("eager-f32", "amp-bf16", "tf32"):
            print(json.dumps({"impl": "torch", "mode": mode, "preset": a.preset,
                              "error": f"unknown mode {mode!r}"}), flush=True)
            continue
        if mode == "tf32" and device.type != "cuda":
            log("skipping mode tf32 on CPU (TF32 is a CUDA tensor-core format; on CPU it equals eager-f32)")
            continue
        if mode == "amp-bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            log("skipping mode amp-bf16: this GPU has no bf16 support")
            continue
        if mode == "amp-bf16" and device.type == "cpu" and not (a.cpu_amp or cpu_has_bf16()):
            log("skipping mode amp-bf16 on CPU: no native bf16 (avx512_bf16/amx_bf16), autocast would "
                "emulate it and only measure the emulation (--cpu-amp runs it anyway)")
            continue
        try:
            res = run_mode(mode, a, c, data, device, dev_name)
        except Exception as e:  # OOM and anything else: report and go on
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
            log(f"[{mode}] failed: {msg}")
            res = {"impl": "torch", "mode": mode, "preset": a.preset, "batch": a.batch,
                   "steps": a.steps, "device": dev_name, "torch": torch.__version__, "error": msg}
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(json.dumps(res), flush=True)
        if "error" not in res:
            log(f"[{mode}] {res['step_s']:.4f} s/step, {res['pairs_per_s']:.2f} pairs/s, "
                f"GASS {res['gass_fraction'] * 100:.1f} % of the step")


if __name__ == "__main__":
    main()
