# LoRA / textual-inversion parity fixtures, made on the GPU machine with diffusers' own loaders (fp32, CPU).
# usage: python make_fixtures.py MODEL_DIR OUT_DIR
# Writes OUT_DIR/{a,b,te,kohya}.safetensors (fp16 LoRAs), kilnstyle.safetensors (A1111 embedding),
# reference.safetensors (pipeline latents per case) and cases.json; errors per case are recorded, not fatal.
import json, os, sys, traceback
import torch
from safetensors.torch import save_file
from diffusers import StableDiffusionPipeline, EulerDiscreteScheduler

MODEL, OUT = sys.argv[1], sys.argv[2]
os.makedirs(OUT, exist_ok=True)
torch.set_grad_enabled(False)
PROMPT = "a red circle on a blue background"


def load():
    p = StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32, safety_checker=None,
                                                requires_safety_checker=False)
    p.set_progress_bar_config(disable=True)
    return p


base = load()
unet_mods = {n: m for n, m in base.unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
te_mods = {n: m for n, m in base.text_encoder.named_modules() if isinstance(m, torch.nn.Linear)}
g = torch.Generator("cpu").manual_seed(2024)


def factors(mod, rank, std=0.2):
    if isinstance(mod, torch.nn.Conv2d):
        down = torch.randn((rank, mod.in_channels, *mod.kernel_size), generator=g) * std
        up = torch.randn((mod.out_channels, rank, 1, 1), generator=g) * std
    else:
        down = torch.randn((rank, mod.in_features), generator=g) * std
        up = torch.randn((mod.out_features, rank), generator=g) * std
    return down.half(), up.half()


def peft_file(path, prefix, mods, select, rank):
    sd = {}
    for n, m in mods.items():
        if select(n, m):
            d, u = factors(m, rank)
            sd[f"{prefix}.{n}.lora_A.weight"] = d
            sd[f"{prefix}.{n}.lora_B.weight"] = u
    save_file(sd, path)
    return len(sd) // 2


attn = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
files = {}
# A: every attention/FF layer plus the resnets' 3x3 convs (LoCon-style conv factors)
files["a"] = peft_file(os.path.join(OUT, "a.safetensors"), "unet", unet_mods,
                       lambda n, m: n.endswith(attn) or (".resnets." in n and n.endswith(("conv1", "conv2"))), 4)
# B: attention only, another rank
files["b"] = peft_file(os.path.join(OUT, "b.safetensors"), "unet", unet_mods, lambda n, m: n.endswith(attn[:4]), 8)
# TE: text encoder only
files["te"] = peft_file(os.path.join(OUT, "te.safetensors"), "text_encoder", te_mods,
                        lambda n, m: n.endswith(("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")), 4)
# kohya: lora_unet_/lora_te_ names, alpha != rank, one LoCon 3x3 conv
ks = {}
for n, m in unet_mods.items():
    if n.endswith(("attn1.to_q", "attn2.to_v", "ff.net.2")) or n == "down_blocks.0.resnets.0.conv1":
        d, u = factors(m, 4)
        k = "lora_unet_" + n.replace(".", "_")
        ks[k + ".lora_down.weight"], ks[k + ".lora_up.weight"] = d, u
        ks[k + ".alpha"] = torch.tensor(2.0)
for n, m in te_mods.items():
    if n.endswith(("q_proj", "fc1")):
        d, u = factors(m, 4)
        k = "lora_te_" + n.replace(".", "_")
        ks[k + ".lora_down.weight"], ks[k + ".lora_up.weight"] = d, u
        ks[k + ".alpha"] = torch.tensor(8.0)
save_file(ks, os.path.join(OUT, "kohya.safetensors"))
# textual inversion, A1111 layout, two vectors
dim = base.text_encoder.config.hidden_size
save_file({"emb_params": (torch.randn((2, dim), generator=g) * 0.5).half()}, os.path.join(OUT, "kilnstyle.safetensors"))

size = base.vae.config.sample_size
cases = {
    "base": dict(loras=[], prompt=PROMPT),
    "a_0.5": dict(loras=[["a", 0.5]], prompt=PROMPT),
    "a_1.0": dict(loras=[["a", 1.0]], prompt=PROMPT),
    "a_b": dict(loras=[["a", 1.0], ["b", 0.7]], prompt=PROMPT),
    "te": dict(loras=[["te", 1.0]], prompt=PROMPT),
    "kohya": dict(loras=[["kohya", 0.8]], prompt=PROMPT),
    "ti": dict(loras=[], embedding="kilnstyle", prompt="a kilnstyle circle on a blue background"),
}
ref, meta = {}, {"size": size, "steps": 8, "guidance": 7.5, "seed": 1234, "scheduler": "EulerDiscreteScheduler (model config)",
                  "files": files, "cases": {}}
for name, c in cases.items():
    try:
        p = load()
        names = []
        for ln, w in c["loras"]:
            p.load_lora_weights(os.path.join(OUT, ln + ".safetensors"), adapter_name=ln)
            names.append(ln)
        if names:
            p.set_adapters(names, adapter_weights=[w for _, w in c["loras"]])
        if c.get("embedding"):
            p.load_textual_inversion(os.path.join(OUT, c["embedding"] + ".safetensors"), token=c["embedding"])
        lat = p(c["prompt"], height=size, width=size, num_inference_steps=8, guidance_scale=7.5,
                generator=torch.Generator("cpu").manual_seed(1234), output_type="latent").images
        ref[name] = lat.contiguous()
        meta["cases"][name] = c
    except Exception:
        meta["cases"][name] = dict(c, error=traceback.format_exc())
        print(name, traceback.format_exc(), file=sys.stderr)
save_file(ref, os.path.join(OUT, "reference.safetensors"))
json.dump(meta, open(os.path.join(OUT, "cases.json"), "w"), indent=1)
print(json.dumps({k: ("error" if "error" in v else "ok") for k, v in meta["cases"].items()}))
