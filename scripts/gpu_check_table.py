#!/usr/bin/env python3
"""The summaries of scripts/gpu-check.sh (run on the GPU machine; standard library only).

  gpu_check_table.py row RAW_LINE_FILE PRECISION BATCH RC PEAK_MIB CARD   -> one JSON row
  gpu_check_table.py pretrain LOG RC32 WALL32 RC16 WALL16                 -> the (d) line
  gpu_check_table.py table ROWS CARD TESTS_RC OK BAD WORST RESULT PRETRAIN KERNELS INFERENCE
                                                                          -> markdown
"""
import json
import sys

TORCH_MODE = {"f32": "eager-f32", "tf32": "tf32", "bf16": "amp-bf16"}


def row(raw, precision, batch, rc, peak, card):
    text = open(raw, errors="replace").read().splitlines()
    lines = [l for l in text if l.startswith('{"')]
    errors = [l.strip() for l in text if "error" in l.lower() or "panicked" in l]
    why = errors[-1][:160] if errors else "see the log"
    if rc == "124":
        why = f"timed out; {why}"
    r = json.loads(lines[0]) if lines else {
        "impl": "gadms", "mode": precision, "batch": int(batch), "error": f"rc {rc}: {why}"}
    r["peak_mem_mib"] = float(peak)
    r["device"] = card
    print(json.dumps(r))


def pretrain(log, rc32, wall32, rc16, wall16):
    def r1(p):
        try:
            ev = [r for r in map(json.loads, open(f"{log}/pretrain-{p}/metrics.jsonl"))
                  if "r1" in r and r.get("split") == "test"]
            return ev[0]["r1"], ev[-1]["r1"], ev[-1]["map"]
        except (OSError, ValueError, IndexError, KeyError):
            return None
    a, b = r1("f32"), r1("bf16")
    if a is None or b is None:
        print(f"(d) `gadms pretrain --device cuda`: f32 rc {rc32} ({wall32} s), bf16 rc {rc16} "
              f"({wall16} s): no metrics; see pretrain-*.log")
        return
    ok = abs(a[1] - b[1]) <= 2.0
    print(f"(d) `gadms pretrain --device cuda` (Tiny, embedded set): f32 {wall32} s wall, test R1 "
          f"{a[0]:.2f} -> {a[1]:.2f} (mAP {a[2]:.2f}); bf16 {wall16} s wall, test R1 {b[0]:.2f} -> "
          f"{b[1]:.2f} (mAP {b[2]:.2f}): {'PASS' if ok else 'FAIL'} (bf16 within 2 points of "
          f"f32: {b[1] - a[1]:+.2f})")


def num(r, key, fmt="{:.1f}"):
    v = None if r is None else r.get(key)
    return "–" if v is None else fmt.format(v)


def table(rows_path, card, rc, ok, bad, worst, result, pretrain_line, kernels, inference=None):
    rows = [json.loads(l) for l in open(rows_path) if l.strip().startswith("{")]
    print(f"\n### gpu-check on {card}\n")
    verdict = "PASS" if rc == "0" else f"FAIL (rc {rc})"
    print(f"(a) CPU vs CUDA parity: {verdict}: {ok} comparisons within 1e-4, {bad} over; worst "
          f"relative error {worst}; {result.strip()}\n")
    print("Fused kernels, reduced-precision products and bf16 copies (tests/cuda/kernels.rs):\n")
    print("```")
    print(open(kernels).read().rstrip() or "(no lines: see cuda-tests.log)")
    print("```\n")

    def find(impl, mode, batch):
        return next((r for r in rows if r.get("impl") == impl and r.get("mode") == mode
                     and r.get("batch") == batch), None)

    print("| batch | precision (PyTorch mode) | gadms pairs/s | PyTorch pairs/s | gadms ÷ PyTorch "
          "| gadms peak MiB, nvidia-smi (pool held / live) | PyTorch peak MiB (allocated / reserved) "
          "| memory gadms ÷ PyTorch (nvidia-smi ÷ reserved) | GASS fraction gadms / PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for b in sorted({r.get("batch") for r in rows if r.get("impl") == "gadms"}):
        for p, mode in TORCH_MODE.items():
            g, t = find("gadms", p, b), find("torch", mode, b)
            if g is None and t is None:
                continue
            done = g is not None and "pairs_per_s" in g
            gp = num(g, "pairs_per_s") if done or g is None else f"error: {g.get('error')}"
            ratio = mem = "–"
            if done and t and t.get("pairs_per_s"):
                ratio = f"{g['pairs_per_s'] / t['pairs_per_s']:.3f}"
            if done and t and t.get("peak_reserved_mib"):
                mem = f"{g['peak_mem_mib'] / t['peak_reserved_mib']:.2f}"
            gmem = "–"
            if done:
                gmem = (f"{num(g, 'peak_mem_mib', '{:.0f}')} ({num(g, 'pool_reserved_mib', '{:.0f}')}"
                        f" / {num(g, 'pool_used_mib', '{:.0f}')})")
            print(f"| {b} | {p} ({mode}) | {gp} | {num(t, 'pairs_per_s')} | {ratio} | {gmem} | "
                  f"{num(t, 'peak_mem_mib', '{:.0f}')} / {num(t, 'peak_reserved_mib', '{:.0f}')} | "
                  f"{mem} | {num(g, 'gass_fraction', '{:.3f}')} / "
                  f"{num(t, 'gass_fraction', '{:.3f}')} |")
    for r in rows:
        if r.get("impl") == "gadms" and r.get("mode") == "bf16-fused-unverified":
            note = (f"{r['pairs_per_s']:.1f} pairs/s, peak {r['peak_mem_mib']:.0f} MiB"
                    if "pairs_per_s" in r else r.get("error", "no result"))
            print(f"\nWith the fused kernels on although a parity test failed (unverified), "
                  f"batch {r.get('batch')}, bf16: {note}")
    copies = [r for r in rows if r.get("impl") == "gadms" and "copies_to_host" in r]
    if copies:
        print("\nHost↔device copies per gadms step (dfdx's transfer counters):\n")
        print("| batch | precision | to the device (KiB) | to the host (KiB) |")
        print("|---|---|---|---|")
        for r in copies:
            print(f"| {r['batch']} | {r['mode']} | {r['copies_to_device']:.0f} "
                  f"({r['bytes_to_device'] / 1024:.1f}) | {r['copies_to_host']:.0f} "
                  f"({r['bytes_to_host'] / 1024:.1f}) |")
    print(f"\n{pretrain_line}")
    if inference:
        try:
            lines = open(inference).read().rstrip()
        except OSError:
            lines = ""
        print("\n(e) inference (`gadms bench model --device cuda --embed-batch 256`):\n")
        print("```")
        print(lines or "(no lines: see model-*.log)")
        print("```")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"row": row, "pretrain": pretrain, "table": table}[cmd](*args)
