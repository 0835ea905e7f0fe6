"""Trains Kiln's built-in model (kiln-shapes) on the procedural scene data.

    python3 train.py --data DATA --work WORK --out OUT [--vae-steps N] [--unet-steps N] [--seed S] [--resume]

DATA is what `go run ./tools/train/datagen` writes (tokenizer/, images.u8,
captions.txt, heldout.txt). Phase 1 trains the AutoencoderKL; phase 2 trains
the UNet and the text encoder together on the VAE's latents with caption
dropout (so that classifier-free guidance works). Checkpoints go to WORK
every --ckpt-every steps and --resume continues from the last one. OUT
receives the diffusers folder (fp16 safetensors), the loss logs and a sample
grid. Everything is seeded; see README.md for the settings that were used.
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from models import AutoencoderKL, CLIPTextModel, UNet2DConditionModel

SIZE = 128
VAE_CFG = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[32, 64, 128, 128],
               layers_per_block=1, norm_num_groups=32)
UNET_CFG = dict(in_channels=4, out_channels=4, block_out_channels=[64, 96, 128], layers_per_block=1,
                down_block_types=["CrossAttnDownBlock2D"] * 3, up_block_types=["CrossAttnUpBlock2D"] * 3,
                attention_head_dim=4, cross_attention_dim=128, norm_num_groups=32, norm_eps=1e-5,
                flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, use_linear_projection=False)
TE_HIDDEN, TE_LAYERS, TE_HEADS, TE_INNER = 128, 4, 4, 512
BETA_START, BETA_END, T = 0.00085, 0.012, 1000


def load_tokens(data):
    vocab = json.load(open(os.path.join(data, "tokenizer", "vocab.json")))
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]

    def encode(caption):
        ids = [bos] + [vocab[w + "</w>"] for w in caption.split()] + [eos]
        assert len(ids) <= 77, caption
        return ids + [eos] * (77 - len(ids))
    return vocab, encode


def te_config(vocab):
    return dict(architectures=["CLIPTextModel"], attention_dropout=0.0, bos_token_id=vocab["<|startoftext|>"],
                dtype="float16", eos_token_id=vocab["<|endoftext|>"], hidden_act="quick_gelu",
                hidden_size=TE_HIDDEN, initializer_factor=1.0, initializer_range=0.02, intermediate_size=TE_INNER,
                layer_norm_eps=1e-5, max_position_embeddings=77, model_type="clip_text_model",
                num_attention_heads=TE_HEADS, num_hidden_layers=TE_LAYERS, pad_token_id=vocab["<|endoftext|>"],
                projection_dim=TE_HIDDEN, transformers_version="5.17.0", vocab_size=len(vocab))


def full_unet_config():
    c = {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.40.0.dev0", "act_fn": "silu",
         "addition_embed_type": None, "addition_embed_type_num_heads": 64, "addition_time_embed_dim": None,
         "attention_type": "default", "center_input_sample": False, "class_embed_type": None,
         "class_embeddings_concat": False, "conv_in_kernel": 3, "conv_out_kernel": 3, "cross_attention_norm": None,
         "dropout": 0.0, "dual_cross_attention": False, "encoder_hid_dim": None, "encoder_hid_dim_type": None,
         "mid_block_only_cross_attention": None, "mid_block_scale_factor": 1,
         "mid_block_type": "UNetMidBlock2DCrossAttn", "num_attention_heads": None, "num_class_embeds": None,
         "only_cross_attention": False, "projection_class_embeddings_input_dim": None,
         "resnet_out_scale_factor": 1.0, "resnet_skip_time_act": False, "resnet_time_scale_shift": "default",
         "reverse_transformer_layers_per_block": None, "sample_size": SIZE // 8, "time_cond_proj_dim": None,
         "time_embedding_act_fn": None, "time_embedding_dim": None, "time_embedding_type": "positional",
         "timestep_post_act": None, "transformer_layers_per_block": 1, "upcast_attention": False}
    c.update(UNET_CFG)
    return c


def full_vae_config(scaling):
    c = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.40.0.dev0", "act_fn": "silu",
         "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
         "force_upcast": True, "latents_mean": None, "latents_std": None, "mid_block_add_attention": True,
         "sample_size": SIZE, "scaling_factor": scaling, "shift_factor": None, "use_post_quant_conv": True,
         "use_quant_conv": True}
    c.update(VAE_CFG)
    return c


def scheduler_config():
    return {"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.40.0.dev0", "beta_end": BETA_END,
            "beta_schedule": "scaled_linear", "beta_start": BETA_START, "clip_sample": False,
            "final_sigmas_type": "zero", "interpolation_type": "linear", "num_train_timesteps": T,
            "prediction_type": "epsilon", "rescale_betas_zero_snr": False, "set_alpha_to_one": False,
            "sigma_max": None, "sigma_min": None, "steps_offset": 1, "timestep_spacing": "linspace",
            "timestep_type": "discrete", "trained_betas": None, "use_beta_sigmas": False,
            "use_exponential_sigmas": False, "use_karras_sigmas": False}


START = time.time()


class OutOfTime(Exception):
    """Raised after the checkpoint when --max-seconds has passed."""


def out_of_time(args):
    return args.max_seconds > 0 and time.time() - START > args.max_seconds


class EMA:
    def __init__(self, model, decay):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            self.shadow[k].mul_(self.decay).add_(v.float(), alpha=1 - self.decay)


def lr_at(step, total, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def save_ckpt(path, **state):
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_vae(args, images, dev, log):
    g = torch.Generator(device=dev).manual_seed(args.seed)
    vae = AutoencoderKL(VAE_CFG).to(dev)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    step, ck = 0, os.path.join(args.work, "vae.pt")
    if args.resume and os.path.exists(ck):
        s = torch.load(ck, map_location=dev)
        vae.load_state_dict(s["model"]); opt.load_state_dict(s["opt"]); step = s["step"]; g.set_state(s["rng"].cpu())
        print(f"vae: resumed at step {step}")
    n = images.shape[0]
    t0 = time.time()
    while step < args.vae_steps:
        for pg in opt.param_groups:
            pg["lr"] = lr_at(step, args.vae_steps, args.vae_lr, 200)
        idx = torch.randint(0, n, (args.vae_batch,), device=dev, generator=g)
        x = images[idx].permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev == "cuda"):
            mean, logvar = vae.encode(x)
            z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, device=dev, generator=g)
            rec = vae.decode(z)
        rec = rec.float()
        kl = 0.5 * (mean.float() ** 2 + logvar.float().exp() - 1 - logvar.float()).sum(dim=(1, 2, 3)).mean()
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + args.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0 or step == args.vae_steps:
            log.write(json.dumps({"phase": "vae", "step": step, "loss": loss.item(), "kl": kl.item(),
                                  "l1": F.l1_loss(rec, x).item(), "t": time.time() - t0}) + "\n")
            log.flush()
        if step % 500 == 0:
            print(f"vae step {step} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
        if step % args.ckpt_every == 0 or step == args.vae_steps or out_of_time(args):
            save_ckpt(ck, model=vae.state_dict(), opt=opt.state_dict(), step=step, rng=g.get_state())
            if out_of_time(args) and step < args.vae_steps:
                raise OutOfTime(f"vae stopped at step {step}")
    return vae.eval()


@torch.no_grad()
def encode_all(vae, images, dev, bs=512):
    means, stds = [], []
    for i in range(0, images.shape[0], bs):
        x = images[i:i + bs].permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev == "cuda"):
            m, lv = vae.encode(x)
        means.append(m.half()); stds.append(torch.exp(0.5 * lv.float()).half())
    return torch.cat(means), torch.cat(stds)


def train_unet(args, means, stds, scale, tokens, dev, log, vocab):
    g = torch.Generator(device=dev).manual_seed(args.seed + 1)
    te = CLIPTextModel(te_config(vocab)).to(dev)
    unet = UNet2DConditionModel(UNET_CFG).to(dev)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=0.01)
    ema_u, ema_t = EMA(unet, args.ema), EMA(te, args.ema)
    betas = torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, T, device=dev) ** 2
    acp = torch.cumprod(1 - betas, 0)
    snr = acp / (1 - acp)
    step, ck = 0, os.path.join(args.work, "unet.pt")
    if args.resume and os.path.exists(ck):
        s = torch.load(ck, map_location=dev)
        unet.load_state_dict(s["unet"]); te.load_state_dict(s["te"]); opt.load_state_dict(s["opt"])
        ema_u.shadow, ema_t.shadow, step = s["ema_u"], s["ema_t"], s["step"]
        g.set_state(s["rng"].cpu())
        print(f"unet: resumed at step {step}")
    n = means.shape[0]
    t0 = time.time()
    while step < args.unet_steps:
        for pg in opt.param_groups:
            pg["lr"] = lr_at(step, args.unet_steps, args.unet_lr, 500)
        idx = torch.randint(0, n, (args.unet_batch,), device=dev, generator=g)
        z = (means[idx].float() + stds[idx].float() * torch.randn(means[idx].shape, device=dev, generator=g)) * scale
        ids = tokens[idx].clone()
        drop = torch.rand(ids.shape[0], device=dev, generator=g) < args.drop
        ids[drop] = tokens_empty(tokens)
        t = torch.randint(0, T, (ids.shape[0],), device=dev, generator=g)
        noise = torch.randn(z.shape, device=dev, generator=g)
        a = acp[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z + (1 - a).sqrt() * noise
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev == "cuda"):
            pred = unet(zt, t, te(ids))
        w = torch.clamp(snr[t], max=5.0) / snr[t]  # min-SNR-5 weighting for epsilon prediction
        loss = (w * ((pred.float() - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_u.update(unet); ema_t.update(te)
        step += 1
        if step % 50 == 0 or step == args.unet_steps:
            log.write(json.dumps({"phase": "unet", "step": step, "loss": loss.item(), "t": time.time() - t0}) + "\n")
            log.flush()
        if step % 500 == 0:
            print(f"unet step {step} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
        if step % args.ckpt_every == 0 or step == args.unet_steps or out_of_time(args):
            save_ckpt(ck, unet=unet.state_dict(), te=te.state_dict(), opt=opt.state_dict(), ema_u=ema_u.shadow,
                      ema_t=ema_t.shadow, step=step, rng=g.get_state())
            if out_of_time(args) and step < args.unet_steps:
                raise OutOfTime(f"unet stopped at step {step}")
    unet.load_state_dict({k: v.to(unet.state_dict()[k].dtype) for k, v in ema_u.shadow.items()})
    te.load_state_dict({k: v.to(te.state_dict()[k].dtype) for k, v in ema_t.shadow.items()})
    return unet.eval(), te.eval()


def tokens_empty(tokens):
    """The ids of the empty caption: BOS, EOS, then EOS padding."""
    e = tokens[0].clone()
    bos, eos = tokens[0, 0], tokens[0, -1]
    e[:] = eos
    e[0] = bos
    return e


@torch.no_grad()
def sample_grid(unet, te, vae, scale, encode, captions, dev, steps=30, guidance=5.0, seed=0):
    """A DDIM sampler, only to eyeball progress; Kiln's own samplers judge the model."""
    betas = torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, T, device=dev) ** 2
    acp = torch.cumprod(1 - betas, 0)
    ids = torch.tensor([encode(c) for c in captions], device=dev)
    uncond = torch.tensor([encode("")] * len(captions), device=dev)
    ctx = torch.cat([te(uncond), te(ids)])
    g = torch.Generator(device=dev).manual_seed(seed)
    z = torch.randn((len(captions), 4, SIZE // 8, SIZE // 8), device=dev, generator=g)
    ts = list(range(T - 1, -1, -T // steps))
    for i, t in enumerate(ts):
        eps = unet(torch.cat([z, z]), torch.full((2 * len(captions),), t, device=dev), ctx)
        eu, ec = eps.chunk(2)
        e = eu + guidance * (ec - eu)
        a = acp[t]
        a_prev = acp[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, device=dev)
        x0 = (z - (1 - a).sqrt() * e) / a.sqrt()
        z = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * e
    img = vae.decode(z / scale).clamp(-1, 1)
    return ((img + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu()


def export(out, vae, unet, te, scale, vocab, data):
    root = os.path.join(out, "kiln-shapes")
    for d in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    half = lambda m: {k: v.detach().half().contiguous().cpu() for k, v in m.state_dict().items()}
    save_file(half(unet), os.path.join(root, "unet", "diffusion_pytorch_model.safetensors"))
    save_file(half(vae), os.path.join(root, "vae", "diffusion_pytorch_model.safetensors"))
    save_file(half(te), os.path.join(root, "text_encoder", "model.safetensors"))
    dump = lambda obj, *p: json.dump(obj, open(os.path.join(root, *p), "w"), indent=2)
    dump(full_unet_config(), "unet", "config.json")
    dump(full_vae_config(scale), "vae", "config.json")
    dump(te_config(vocab), "text_encoder", "config.json")
    dump(scheduler_config(), "scheduler", "scheduler_config.json")
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        with open(os.path.join(data, "tokenizer", f), "rb") as src, open(os.path.join(root, "tokenizer", f), "wb") as dst:
            dst.write(src.read())
    dump({"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.40.0.dev0",
          "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
          "safety_checker": [None, None], "scheduler": ["diffusers", "EulerDiscreteScheduler"],
          "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
          "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}, "model_index.json")
    return root


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--vae-steps", type=int, default=3000)
    p.add_argument("--vae-batch", type=int, default=48)
    p.add_argument("--vae-lr", type=float, default=3e-4)
    p.add_argument("--kl", type=float, default=1e-6)
    p.add_argument("--unet-steps", type=int, default=12000)
    p.add_argument("--unet-batch", type=int, default=256)
    p.add_argument("--unet-lr", type=float, default=4e-4)
    p.add_argument("--drop", type=float, default=0.1, help="caption dropout probability")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--max-seconds", type=float, default=0,
                   help="stop with a checkpoint after this long (0: no limit); --resume continues")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(args.work, exist_ok=True); os.makedirs(args.out, exist_ok=True)
    vocab, encode = load_tokens(args.data)
    captions = open(os.path.join(args.data, "captions.txt")).read().splitlines()
    raw = torch.from_file(os.path.join(args.data, "images.u8"), size=len(captions) * SIZE * SIZE * 3, dtype=torch.uint8)
    images = raw.view(len(captions), SIZE, SIZE, 3).to(dev)
    tokens = torch.tensor([encode(c) for c in captions], device=dev)
    log = open(os.path.join(args.out, "loss.jsonl"), "a")

    t0 = time.time()
    vae = train_vae(args, images, dev, log)
    means, stds = encode_all(vae, images, dev)
    gs = torch.Generator(device=dev).manual_seed(args.seed + 2)
    scale = float(1.0 / (means.float() + stds.float() * torch.randn(means.shape, device=dev, generator=gs)).std())
    print(f"vae done in {time.time() - t0:.0f}s; latent scaling factor {scale:.5f}", flush=True)
    del images
    t1 = time.time()
    unet, te = train_unet(args, means, stds, scale, tokens, dev, log, vocab)
    print(f"unet+te done in {time.time() - t1:.0f}s", flush=True)
    count = lambda m: sum(p.numel() for p in m.parameters())
    print(f"parameters: unet {count(unet)/1e6:.2f}M vae {count(vae)/1e6:.2f}M te {count(te)/1e6:.2f}M", flush=True)
    root = export(args.out, vae, unet, te, scale, vocab, args.data)
    held = open(os.path.join(args.data, "heldout.txt")).read().splitlines()[:16]
    grid = sample_grid(unet, te, vae, scale, encode, held, dev)
    grid.numpy().tofile(os.path.join(args.out, "samples.u8"))
    open(os.path.join(args.out, "samples.txt"), "w").write("\n".join(held) + "\n")
    print(f"exported {root} in {time.time() - t0:.0f}s total", flush=True)


if __name__ == "__main__":
    try:
        main()
    except OutOfTime as e:
        print(f"out of time: {e}; run again with --resume to continue", flush=True)
        raise SystemExit(3)
