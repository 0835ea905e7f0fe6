"""Draws loss.jsonl (written by train.py) as an SVG with two panels, VAE and
UNet+text encoder, using only the standard library.

    python3 plot_loss.py loss.jsonl loss.svg
"""
import json
import math
import sys


def panel(rows, key, x0, title, w=420, h=260):
    xs = [r["step"] for r in rows]
    ys = [r[key] for r in rows]
    lo, hi = min(ys), max(ys)
    lo, hi = math.log10(lo), math.log10(hi)
    pad = 40
    px = lambda s: x0 + pad + (s - xs[0]) / max(1, xs[-1] - xs[0]) * (w - 2 * pad)
    py = lambda v: 20 + (hi - math.log10(v)) / max(1e-9, hi - lo) * (h - 60)
    pts = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in zip(xs, ys))
    out = [f'<text x="{x0 + w / 2}" y="14" text-anchor="middle" font-size="13">{title}</text>',
           f'<polyline fill="none" stroke="#2a6fdb" stroke-width="1.5" points="{pts}"/>',
           f'<line x1="{x0 + pad}" y1="{h - 40}" x2="{x0 + w - pad}" y2="{h - 40}" stroke="#888"/>',
           f'<line x1="{x0 + pad}" y1="20" x2="{x0 + pad}" y2="{h - 40}" stroke="#888"/>',
           f'<text x="{x0 + pad}" y="{h - 24}" font-size="11">step {xs[0]}</text>',
           f'<text x="{x0 + w - pad}" y="{h - 24}" font-size="11" text-anchor="end">{xs[-1]}</text>',
           f'<text x="{x0 + pad - 4}" y="26" font-size="11" text-anchor="end">{10 ** hi:.3g}</text>',
           f'<text x="{x0 + pad - 4}" y="{h - 40}" font-size="11" text-anchor="end">{10 ** lo:.3g}</text>']
    return out


def main(src, dst):
    rows = [json.loads(l) for l in open(src)]
    vae = [r for r in rows if r["phase"] == "vae"]
    unet = [r for r in rows if r["phase"] == "unet"]
    body = panel(vae, "loss", 0, "VAE: L1 + L2 + 1e-6 KL (log scale)") + \
        panel(unet, "loss", 440, "UNet + text encoder: min-SNR-5 ε loss (log scale)")
    svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="880" height="260" font-family="sans-serif">',
           '<rect width="100%" height="100%" fill="white"/>'] + body + ["</svg>"]
    open(dst, "w").write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
