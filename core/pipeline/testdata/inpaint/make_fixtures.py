# Tiny inpainting fixtures from diffusers: StableDiffusionInpaintPipeline and StableDiffusionXLInpaintPipeline,
# each with a 4-channel UNet (masked latent blending) and a 9-channel inpainting UNet (latents, mask and
# masked-image latents as input). Random weights, stored in fp16; the references are computed in fp32 on the CPU
# from exactly the stored fp16 values.
#
# Runs on the GPU machine (the only place with PyTorch):
#   python make_fixtures.py OUT_DIR TOKENIZER_DIR
# TOKENIZER_DIR holds vocab.json + merges.txt of a CLIP-format BPE tokenizer (models/kiln-shapes/tokenizer: its
# small vocabulary keeps the embedding tables tiny).
#
# Writes under OUT_DIR:
#   sd4/, sd9/       diffusers folders, StableDiffusionInpaintPipeline, 4- and 9-channel UNets (fp16)
#   sdxl4/, sdxl9/   diffusers folders, StableDiffusionXLInpaintPipeline, 4- and 9-channel UNets (fp16)
#   init.png, mask.png        the 64×64 init image and mask every case uses (mask: white = repaint)
#   reference.safetensors     pipe/<case>/latents: the final latents (output_type="latent")
#   reference.json            each case's model, scheduler and call arguments
import json, os, sys, shutil, time, traceback
import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
import diffusers
from diffusers import (AutoencoderKL, UNet2DConditionModel, StableDiffusionInpaintPipeline,
                       StableDiffusionXLInpaintPipeline, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler,
                       DDIMScheduler)

OUT = sys.argv[1]
VOCAB = sys.argv[2]
torch.set_grad_enabled(False)
torch.set_num_threads(8)
SIZE = 64

SD_SCHED = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                steps_offset=1, clip_sample=False, set_alpha_to_one=False, timestep_spacing="linspace",
                interpolation_type="linear", prediction_type="epsilon", use_karras_sigmas=False)
XL_SCHED = dict(SD_SCHED, timestep_spacing="leading")

SD_TE = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=3, hidden_act="quick_gelu")
SD_UNET = dict(sample_size=16, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
               down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
               up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=2,
               cross_attention_dim=SD_TE["hidden_size"], norm_num_groups=8)
# XL: two encoders, text_time embedding (no aesthetic score, as the base inpainting model)
XL_TE1 = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, hidden_act="quick_gelu")
XL_TE2 = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=3, hidden_act="gelu",
              projection_dim=32)
ADD_T = 8
XL_UNET = dict(sample_size=16, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
               down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
               up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2),
               attention_head_dim=(1, 2), use_linear_projection=True,
               cross_attention_dim=XL_TE1["hidden_size"] + XL_TE2["hidden_size"], norm_num_groups=8,
               addition_embed_type="text_time", addition_time_embed_dim=ADD_T,
               projection_class_embeddings_input_dim=XL_TE2["projection_dim"] + 6 * ADD_T)
VAE = dict(block_out_channels=(8, 16, 16), in_channels=3, out_channels=3, layers_per_block=1,
           down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
           latent_channels=4, norm_num_groups=4, sample_size=SIZE, scaling_factor=0.18215)
XL_VAE = dict(VAE, scaling_factor=0.13025, force_upcast=True)


def clip_config(c, pad_id):
    return CLIPTextConfig(vocab_size=599, max_position_embeddings=77, bos_token_id=597, eos_token_id=598,
                          pad_token_id=pad_id, projection_dim=c.get("projection_dim", c["hidden_size"]),
                          **{k: v for k, v in c.items() if k != "projection_dim"})


def perturb_and_round(m):
    # random init leaves norms at identity and zero-initialised outputs; perturb every parameter, then round
    # to fp16 so the fp16 files hold exactly the values the references were computed from.
    for p in m.parameters():
        p.add_(torch.randn_like(p) * 0.05)
        p.copy_(p.half().float())
    return m


def tokenizer(pad):
    return CLIPTokenizer(os.path.join(VOCAB, "vocab.json"), os.path.join(VOCAB, "merges.txt"), pad_token=pad,
                         model_max_length=77)


def images():
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    rgb = np.stack([x * 255 // (SIZE - 1), y * 200 // (SIZE - 1), (x ^ y) & 255], -1).astype(np.uint8)
    rgb[((x // 16 + y // 16) % 2 == 0)] ^= 0x5A
    init = Image.fromarray(rgb, "RGB")
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[16:40, 12:44] = 255
    m[((x - 48) ** 2 + (y - 48) ** 2) < 100] = 255
    mask = Image.fromarray(m, "L")
    return init, mask


def sd_pipes():
    torch.manual_seed(1800)
    tok = tokenizer("<|endoftext|>")
    te = perturb_and_round(CLIPTextModel(clip_config(SD_TE, tok.pad_token_id)).eval())
    vae = perturb_and_round(AutoencoderKL(**VAE).eval())
    u4 = perturb_and_round(UNet2DConditionModel(in_channels=4, **SD_UNET).eval())
    u9 = perturb_and_round(UNet2DConditionModel(in_channels=9, **SD_UNET).eval())
    s = EulerDiscreteScheduler.from_config(SD_SCHED)
    mk = lambda u: StableDiffusionInpaintPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=u, scheduler=s,
                                                  safety_checker=None, feature_extractor=None,
                                                  requires_safety_checker=False)
    return {"sd4": mk(u4), "sd9": mk(u9)}


def xl_pipes():
    torch.manual_seed(1801)
    tok1, tok2 = tokenizer("<|endoftext|>"), tokenizer("!")
    te1 = perturb_and_round(CLIPTextModel(clip_config(XL_TE1, tok1.pad_token_id)).eval())
    te2 = perturb_and_round(CLIPTextModelWithProjection(clip_config(XL_TE2, tok2.pad_token_id)).eval())
    vae = perturb_and_round(AutoencoderKL(**XL_VAE).eval())
    u4 = perturb_and_round(UNet2DConditionModel(in_channels=4, **XL_UNET).eval())
    u9 = perturb_and_round(UNet2DConditionModel(in_channels=9, **XL_UNET).eval())
    s = EulerDiscreteScheduler.from_config(XL_SCHED)
    mk = lambda u: StableDiffusionXLInpaintPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1,
                                                    tokenizer_2=tok2, unet=u, scheduler=s,
                                                    requires_aesthetics_score=False,
                                                    force_zeros_for_empty_prompt=True, add_watermarker=False)
    return {"sdxl4": mk(u4), "sdxl9": mk(u9)}


SAMPLERS = {"euler": EulerDiscreteScheduler, "euler_a": EulerAncestralDiscreteScheduler, "ddim": DDIMScheduler}

# name: (model, sampler, call arguments)
CASES = {
    "sd4_euler": ("sd4", "euler", dict(strength=0.75, guidance_scale=5.0, num_inference_steps=8, seed=11)),
    "sd4_euler_a_full": ("sd4", "euler_a", dict(strength=1.0, guidance_scale=5.0, num_inference_steps=6, seed=12)),
    "sd4_ddim_nocfg": ("sd4", "ddim", dict(strength=0.6, guidance_scale=1.0, num_inference_steps=10, seed=13)),
    "sd9_euler": ("sd9", "euler", dict(strength=0.75, guidance_scale=5.0, num_inference_steps=8, seed=21)),
    "sd9_euler_a_full": ("sd9", "euler_a", dict(strength=1.0, guidance_scale=5.0, num_inference_steps=6, seed=22)),
    "sd9_euler_negative": ("sd9", "euler", dict(strength=0.9, guidance_scale=6.0, num_inference_steps=6, seed=23,
                                                negative_prompt="blurry, low quality")),
    "sdxl4_euler": ("sdxl4", "euler", dict(strength=0.75, guidance_scale=5.0, num_inference_steps=8, seed=31)),
    "sdxl4_euler_a_full": ("sdxl4", "euler_a", dict(strength=1.0, guidance_scale=5.0, num_inference_steps=6,
                                                    seed=32)),
    "sdxl9_euler": ("sdxl9", "euler", dict(strength=0.75, guidance_scale=5.0, num_inference_steps=8, seed=41)),
    "sdxl9_euler_a_full": ("sdxl9", "euler_a", dict(strength=1.0, guidance_scale=5.0, num_inference_steps=6,
                                                    seed=42)),
}
PROMPT = "a red circle on a blue background"


def main():
    t0 = time.time()
    os.makedirs(OUT, exist_ok=True)
    init, mask = images()
    init.save(os.path.join(OUT, "init.png"))
    mask.save(os.path.join(OUT, "mask.png"))
    # the pipelines read the images back as the Go test does
    init, mask = Image.open(os.path.join(OUT, "init.png")).convert("RGB"), Image.open(os.path.join(OUT, "mask.png"))
    pipes = {}
    for part in (sd_pipes, xl_pipes):
        pipes.update(part())
    for name, p in pipes.items():
        shutil.rmtree(os.path.join(OUT, name), ignore_errors=True)
        p.to(torch.float16)
        p.save_pretrained(os.path.join(OUT, name), safe_serialization=True)
        p.to(torch.float32)
        p.set_progress_bar_config(disable=True)
    print("saved folders", f"{time.time() - t0:.1f}s")
    ref, meta = {}, {"diffusers": diffusers.__version__, "torch": torch.__version__, "prompt": PROMPT, "cases": {}}
    errors = []
    for case, (model, sampler, kw) in CASES.items():
        try:
            p = pipes[model]
            base = p.scheduler
            p.scheduler = SAMPLERS[sampler].from_config(base.config)
            kw = dict(kw)
            seed = kw.pop("seed")
            g = torch.Generator("cpu").manual_seed(seed)
            lat = p(prompt=PROMPT, image=init, mask_image=mask, height=SIZE, width=SIZE, generator=g,
                    output_type="latent", **kw).images
            p.scheduler = base
            ref[f"pipe/{case}/latents"] = lat.float().contiguous()
            meta["cases"][case] = dict(model=model, sampler=sampler, seed=seed, **kw)
            print(case, tuple(lat.shape), float(lat.abs().mean()), f"{time.time() - t0:.1f}s")
        except Exception:
            traceback.print_exc()
            errors.append(case)
    meta["errors"] = errors
    save_file(ref, os.path.join(OUT, "reference.safetensors"))
    json.dump(meta, open(os.path.join(OUT, "reference.json"), "w"), indent=1, default=str)
    print("tensors:", len(ref), "errors:", errors, f"total {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
