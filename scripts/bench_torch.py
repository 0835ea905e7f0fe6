#!/usr/bin/env python3
"""PyTorch + diffusers baseline for `kiln bench --models synthetic:sd15` or
`synthetic:sdxl` (--model sdxl).

Runs on the GPU machine only (scripts/bench-vs-torch.sh calls it). It builds
the same architecture as Kiln's synthetic model from the repository's own
configs (core/model/modeltest/configs: UNet and VAE; for SD 1.5 the CLIP
ViT-L/14 text tower below matches bench/synthetic.go, for SDXL the two text
encoders' configs are there too) with random fp16 weights, and times what
`kiln bench` times:

  unet_step_cfg   one UNet evaluation with classifier-free guidance (batch 2b)
  vae_decode      the VAE decoder on b latents (bf16, as Kiln decodes)
  end_to_end      token ids -> text encoder (prompt and negative) -> 20 Euler
                  steps with CFG -> VAE decode -> 8-bit images on the host
                  (SDXL as StableDiffusionXLPipeline runs it: both encoders'
                  penultimate states concatenated, the second's pooled
                  projection, default time ids, zero conditioning for the
                  empty negative prompt, VAE scaling 0.13025)

in eager mode and under torch.compile (the UNet and the VAE decoder are
compiled; inductor's default mode, one static specialisation per batch
size). Needs only torch, transformers and a diffusers source tree on
PYTHONPATH (or --diffusers PATH to its src/ folder). Writes JSON, updated
after every measurement so that a run cut short keeps what it measured.

All warm-ups (torch.compile's compilations) run first; with --wait-file the
timed part then waits until that file exists, so that the compilations can
overlap another process's measurements (on other CPU cores) and the timed
part still has the GPU to itself; --done-file is created when this process
has finished timing. --table accepts several baseline files (an eager and a
compiled process, say) and merges them.
"""
import argparse
import json
import os
import statistics
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sd15", choices=["sd15", "sdxl"], help="architecture: SD 1.5 at 512², SDXL 1.0 base at 1024²")
    p.add_argument("--configs", default=os.path.join(os.path.dirname(__file__), "..", "core", "model", "modeltest", "configs"))
    p.add_argument("--diffusers", default="", help="path of a diffusers src/ folder (else PYTHONPATH)")
    p.add_argument("--batches", default="1,4,8,16")
    p.add_argument("--modes", default="eager,compile")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default 7.5 for sd15, 5 for sdxl)")
    p.add_argument("--size", type=int, default=0, help="image side (default 512 for sd15, 1024 for sdxl)")
    p.add_argument("--iters", type=int, default=3, help="timed end-to-end runs per batch size")
    p.add_argument("--unet-iters", type=int, default=10, help="timed UNet steps per batch size")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode (default, reduce-overhead, max-autotune...)")
    p.add_argument("--channels-last", type=int, default=1, help="UNet and VAE in channels-last memory format")
    p.add_argument("--compile-dynamic", type=int, default=0,
                   help="compile once with a dynamic batch dimension instead of once per batch size (about 60 s each on the H200 host)")
    p.add_argument("--wait-file", default="", help="after the warm-ups, wait for this file before timing")
    p.add_argument("--wait-timeout", type=float, default=600, help="seconds to wait for --wait-file")
    p.add_argument("--done-file", default="", help="create this file when timing is over")
    p.add_argument("--out", default="torch.json")
    p.add_argument("--table", nargs="+", metavar="JSON",
                   help="only write the side-by-side markdown table of a kiln bench and baseline results (KILN_JSON TORCH_JSON...)")
    return p.parse_args()


TEXT_CONFIG = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                   bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, projection_dim=768)

SCHEDULER_CONFIG = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, num_train_timesteps=1000,
                        prediction_type="epsilon", steps_offset=1, timestep_spacing="leading",
                        interpolation_type="linear", use_karras_sigmas=False)


def stat(ms):
    ms = sorted(ms)
    if not ms:
        return {}
    return {"p50_ms": statistics.median(ms), "min_ms": ms[0], "p95_ms": ms[min(len(ms) - 1, int(0.95 * (len(ms) - 1) + 0.5))], "n": len(ms)}


def table(kiln_path, *torch_paths):
    """The side-by-side table: per batch size, UNet step with CFG, VAE
    decode, end to end and images/s for Kiln, eager and compiled PyTorch,
    and Kiln's speed-up over each (their time / Kiln's time). Several
    baseline files are merged (their results listed together)."""
    with open(kiln_path) as f:
        k = json.load(f)
    t = {"results": []}
    for path in torch_paths:
        with open(path) as f:
            part = json.load(f)
        res = t["results"] + part.get("results", [])
        mode = t.get("compile_mode")
        t.update(part)
        if "compile" not in {r["mode"] for r in part.get("results", [])} and mode is not None:
            t["compile_mode"] = mode  # the compiled run's setting names the column
        t["results"] = res
    kb = {r["batch"]: r for r in k.get("results", [])}
    tb = {}
    for r in t.get("results", []):
        tb.setdefault(r["batch"], {})[r["mode"]] = r
    lines = [f"GPU: {k.get('gpu') or t.get('gpu')}; Kiln: {k.get('driver', '')}; PyTorch {t.get('torch')} (CUDA {t.get('cuda')}, "
             f"cuDNN {t.get('cudnn')}), diffusers {t.get('diffusers', '?')}, compile mode {t.get('compile_mode')}; "
             f"{t.get('model', 'sd15')} {t.get('size')}², {t.get('steps')} steps, CFG {t.get('guidance')}; {k.get('date', '')}",
             "",
             "| batch | measure | Kiln | PyTorch eager | torch.compile | Kiln vs eager | Kiln vs compile |",
             "| --- | --- | --- | --- | --- | --- | --- |"]

    steps = t.get("steps") or 20

    def get(r, key):
        if not r:
            return None
        if key == "images_per_second":
            return r.get(key)
        if key == "step_in_loop":
            # Kiln measures it (time between step callbacks); for PyTorch it
            # is (end to end − VAE decode) / steps, which also carries the
            # text encoder and the host work, so it is an upper bound.
            if "pipeline_step" in r:
                return r["pipeline_step"].get("p50_ms")
            e, v = (r.get("end_to_end") or {}).get("p50_ms"), (r.get("vae_decode") or {}).get("p50_ms")
            return None if e is None or v is None else (e - v) / steps
        return (r.get(key) or {}).get("p50_ms")

    def fmt(v, key):
        if v is None:
            return "—"
        return f"{v:.2f}" if key == "images_per_second" else f"{v:.1f} ms"

    def ratio(kv, tv, key):
        if kv is None or tv is None or kv <= 0 or tv <= 0:
            return "—"
        x = kv / tv if key == "images_per_second" else tv / kv
        return f"{x:.2f}×"

    names = [("unet_step_cfg", "UNet step (CFG)"), ("step_in_loop", "step in the loop"), ("vae_decode", "VAE decode"), ("end_to_end", "end to end"),
             ("images_per_second", "images/s")]
    for b in sorted(set(kb) | set(tb)):
        for key, label in names:
            kv = get(kb.get(b), key)
            ev = get(tb.get(b, {}).get("eager"), key)
            cv = get(tb.get(b, {}).get("compile"), key)
            lines.append(f"| {b} | {label} | {fmt(kv, key)} | {fmt(ev, key)} | {fmt(cv, key)} | {ratio(kv, ev, key)} | {ratio(kv, cv, key)} |")
    return "\n".join(lines) + "\n"


SDXL_SCHEDULER_CONFIG = dict(SCHEDULER_CONFIG)  # SDXL 1.0's: the same betas, leading spacing, steps_offset 1


def build(a, torch, dev):
    """The model's networks on the GPU with random fp16 weights (VAE bf16),
    and the functions the timing drives: encode(b) -> conditioning of b
    images with CFG (unconditional first), unet(fn, x, t, cond) and the
    latent shape."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def load(name):
        with open(os.path.join(a.configs, name)) as f:
            cfg = json.load(f)
        return {k: v for k, v in cfg.items() if not k.startswith("_")}

    def text_config(name):
        cfg = load(name)
        return CLIPTextConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype", "transformers_version", "model_type")})

    xl = a.model == "sdxl"
    with torch.device(dev):  # random init on the GPU: seconds, not minutes, for SDXL
        unet = UNet2DConditionModel.from_config(load("sdxl_unet.json" if xl else "sd15_unet.json"))
        vae = AutoencoderKL.from_config(load("sdxl_vae.json" if xl else "sd_vae.json"))
        if xl:
            te = CLIPTextModel(text_config("sdxl_text_encoder.json"))
            te2 = CLIPTextModelWithProjection(text_config("sdxl_text_encoder_2.json"))
        else:
            te = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    unet = unet.to(torch.float16).eval()
    vae = vae.to(torch.bfloat16).eval()
    te = te.to(torch.float16).eval()
    if xl:
        te2 = te2.to(torch.float16).eval()
    if a.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
        vae = vae.to(memory_format=torch.channels_last)
    lat = a.size // 8
    ctx_dim = 2048 if xl else 768

    def encode(b):
        """b images' conditioning with CFG: hidden states (2b, 77, D) and
        for SDXL the added conditioning (pooled text, time ids)."""
        if not xl:  # prompt and negative prompt, b each
            ids = torch.randint(0, 49406, (2 * b, 77), device=dev)
            return te(ids)[0], None
        ids = torch.randint(0, 49406, (1, 77), device=dev)
        h1 = te(ids, output_hidden_states=True).hidden_states[-2]
        o2 = te2(ids, output_hidden_states=True)
        pos = torch.cat([h1, o2.hidden_states[-2]], dim=-1).repeat(b, 1, 1)
        pooled = o2.text_embeds.repeat(b, 1)
        # force_zeros_for_empty_prompt: the empty negative prompt is zeros
        ctx = torch.cat([torch.zeros_like(pos), pos])
        pooled = torch.cat([torch.zeros_like(pooled), pooled])
        tids = torch.tensor([[a.size, a.size, 0, 0, a.size, a.size]], device=dev, dtype=torch.float16).repeat(2 * b, 1)
        return ctx, {"text_embeds": pooled, "time_ids": tids}

    def random_cond(b):
        ctx = torch.randn(2 * b, 77, ctx_dim, device=dev, dtype=torch.float16)
        if not xl:
            return ctx, None
        return ctx, {"text_embeds": torch.randn(2 * b, 1280, device=dev, dtype=torch.float16),
                     "time_ids": torch.tensor([[a.size, a.size, 0, 0, a.size, a.size]], device=dev, dtype=torch.float16).repeat(2 * b, 1)}

    def call(fn, x, t, cond):
        ctx, added = cond
        if added is None:
            return fn(x, t, encoder_hidden_states=ctx, return_dict=False)
        return fn(x, t, encoder_hidden_states=ctx, added_cond_kwargs=added, return_dict=False)

    return unet, vae, encode, random_cond, call, lat, (0.13025 if xl else 0.18215)


def main():
    a = parse_args()
    if a.table:
        if len(a.table) < 2:
            raise SystemExit("--table needs a kiln result and at least one baseline result")
        sys.stdout.write(table(*a.table))
        return
    if a.guidance is None:
        a.guidance = 5.0 if a.model == "sdxl" else 7.5
    if a.size == 0:
        a.size = 1024 if a.model == "sdxl" else 512
    if a.diffusers:
        sys.path.insert(0, a.diffusers)
    import torch
    from diffusers import EulerDiscreteScheduler

    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = True
    dev = torch.device("cuda")
    torch.manual_seed(1)
    t_build = time.perf_counter()
    unet, vae, encode, random_cond, call, lat, scaling = build(a, torch, dev)
    sched = EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG if a.model == "sdxl" else SCHEDULER_CONFIG)
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version(), "compile_mode": a.compile_mode + (" dynamic" if a.compile_dynamic else ""), "channels_last": bool(a.channels_last),
              "model": a.model, "steps": a.steps, "guidance": a.guidance, "size": a.size, "build_s": time.perf_counter() - t_build, "results": []}
    try:
        import diffusers
        report["diffusers"] = diffusers.__version__
    except Exception:  # a source tree without version metadata still works
        pass

    def save():
        with open(a.out, "w") as f:
            json.dump(report, f, indent=2)

    def sync_ms(fn, n):
        out = []
        for _ in range(n):
            torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            out.append((time.perf_counter() - t) * 1e3)
        return out

    batches = [int(x) for x in a.batches.split(",") if x]
    runs = []  # (mode, b, unet_f, dec_f, inputs)
    for mode in [m for m in a.modes.split(",") if m]:
        if mode == "compile":
            import torch._dynamo
            torch._dynamo.config.cache_size_limit = 64
            # One static graph per batch size, as Kiln captures one per shape,
            # unless --compile-dynamic asks for a single dynamic-batch graph.
            torch._dynamo.config.automatic_dynamic_shapes = bool(a.compile_dynamic)
            dyn = True if a.compile_dynamic else None
            unet_f = torch.compile(unet, mode=None if a.compile_mode == "default" else a.compile_mode, dynamic=dyn)
            dec_f = torch.compile(vae.decode, mode=None if a.compile_mode == "default" else a.compile_mode, dynamic=dyn)
        elif mode == "eager":
            unet_f, dec_f = unet, vae.decode
        else:
            raise SystemExit(f"unknown mode {mode}")
        for b in batches:
            with torch.inference_mode():
                x = torch.randn(2 * b, 4, lat, lat, device=dev, dtype=torch.float16)
                if a.channels_last:
                    x = x.to(memory_format=torch.channels_last)
                cond = random_cond(b)
                t500 = torch.tensor(500.0, device=dev)
                z = torch.randn(b, 4, lat, lat, device=dev, dtype=torch.bfloat16)
                t0 = time.perf_counter()
                for _ in range(2):  # compiles here in compile mode
                    call(unet_f, x, t500, cond)
                for _ in range(2):
                    dec_f(z, return_dict=False)
                torch.cuda.synchronize()
                warm = time.perf_counter() - t0
            runs.append((mode, b, unet_f, dec_f, (x, cond, t500, z), warm))
            print(f"torch {mode:7s} batch {b:2d}: warm-up {warm:.0f} s", flush=True)

    if a.wait_file:
        t0 = time.perf_counter()
        while not os.path.exists(a.wait_file) and time.perf_counter() - t0 < a.wait_timeout:
            time.sleep(0.2)
        report["waited_s"] = time.perf_counter() - t0

    for mode, b, unet_f, dec_f, (x, cond, t500, z), warm in runs:
        r = {"mode": mode, "batch": b, "warmup_s": warm}
        with torch.inference_mode():
            r["unet_step_cfg"] = stat(sync_ms(lambda: call(unet_f, x, t500, cond), a.unet_iters))
            r["vae_decode"] = stat(sync_ms(lambda: dec_f(z, return_dict=False), a.iters))

            def generate():
                ctx, added = encode(b)
                sched.set_timesteps(a.steps, device=dev)
                lt = torch.randn(b, 4, lat, lat, device=dev, dtype=torch.float16) * sched.init_noise_sigma
                for t in sched.timesteps:
                    inp = sched.scale_model_input(torch.cat([lt, lt]), t)
                    if a.channels_last:
                        inp = inp.to(memory_format=torch.channels_last)
                    eps = call(unet_f, inp, t, (ctx, added))[0]
                    u, c = eps.chunk(2)
                    lt = sched.step(u + a.guidance * (c - u), t, lt, return_dict=False)[0]
                img = dec_f((lt / scaling).to(torch.bfloat16), return_dict=False)[0]
                img = ((img.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
                return img.permute(0, 2, 3, 1).cpu().numpy()

            generate()
            e2e = sync_ms(generate, a.iters)
            r["end_to_end"] = stat(e2e)
            r["images_per_second"] = b / (statistics.median(e2e) / 1e3)
        report["results"].append(r)
        save()
        print(f"torch {mode:7s} batch {b:2d}: unet step {r['unet_step_cfg']['p50_ms']:.2f} ms, vae {r['vae_decode']['p50_ms']:.2f} ms, "
              f"e2e {r['end_to_end']['p50_ms']:.1f} ms, {r['images_per_second']:.2f} img/s (warm-up {r['warmup_s']:.0f} s)", flush=True)
    save()
    if a.done_file:
        open(a.done_file, "w").close()


if __name__ == "__main__":
    main()
