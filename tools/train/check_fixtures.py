"""Proves that models.py matches diffusers/transformers: loads the
sd15-tiny fixture weights (strict: every parameter name must match) and
compares the outputs with the reference tensors made by the real libraries.

    python3 check_fixtures.py ../../../shared/fixtures
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file

from models import AutoencoderKL, CLIPTextModel, UNet2DConditionModel


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def main(fx):
    torch.manual_seed(0)
    m = os.path.join(fx, "sd15-tiny", "model")
    ref = load_file(os.path.join(fx, "sd15-tiny", "reference.safetensors"))
    cfg = lambda c: json.load(open(os.path.join(m, c, "config.json")))
    results = {}
    with torch.no_grad():
        te = CLIPTextModel(cfg("text_encoder")).eval()
        te.load_state_dict(load_file(os.path.join(m, "text_encoder", "model.safetensors")), strict=True)
        ids = ref["tok/input_ids"]
        results["te/last_hidden_state"] = rel(te(ids), ref["te/last_hidden_state"])
        results["te/clip_skip2"] = rel(te(ids, skip=2), ref["te/clip_skip2"])

        unet = UNet2DConditionModel(cfg("unet")).eval()
        unet.load_state_dict(load_file(os.path.join(m, "unet", "diffusion_pytorch_model.safetensors")), strict=True)
        x, t, c = ref["unet/in_sample"], ref["unet/in_timesteps"], ref["unet/in_context"]
        results["unet/out"] = rel(unet(x, t, c), ref["unet/out"])
        results["unet/out_scalar_t"] = rel(unet(x, torch.tensor(250.0), c), ref["unet/out_scalar_t"])

        vae = AutoencoderKL(cfg("vae")).eval()
        vae.load_state_dict(load_file(os.path.join(m, "vae", "diffusion_pytorch_model.safetensors")), strict=True)
        results["vae/dec_out"] = rel(vae.decode(ref["vae/dec_in"]), ref["vae/dec_out"])
        mean, logvar = vae.encode(ref["vae/enc_in"])
        results["vae/enc_mean"] = rel(mean, ref["vae/enc_mean"])
        results["vae/enc_logvar"] = rel(logvar, ref["vae/enc_logvar"])
    ok = True
    for k, v in results.items():
        good = v < 1e-4
        ok &= good
        print(f"fixture parity {k:24s} rel err {v:.2e} {'ok' if good else 'FAIL'}")
    if not ok:
        sys.exit("models.py does not match the fixtures")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../../../shared/fixtures")
