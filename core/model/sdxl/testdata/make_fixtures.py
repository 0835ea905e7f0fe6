# Tiny SDXL fixtures (base + refiner) from diffusers/transformers, references in fp32 on the CPU.
#
# Runs on the GPU machine (the only place with PyTorch):
#   python make_fixtures.py OUT_DIR TOKENIZER_DIR
# TOKENIZER_DIR holds vocab.json + merges.txt of a CLIP-format BPE tokenizer (Kiln uses the small
# vocabulary of models/kiln-shapes/tokenizer, so the embedding tables stay tiny).
#
# Writes under OUT_DIR:
#   base/      diffusers folder, StableDiffusionXLPipeline (two text encoders), weights in fp16
#   refiner/   diffusers folder, StableDiffusionXLImg2ImgPipeline (text_encoder_2 only, aesthetic score)
#   base.safetensors, refiner.safetensors   the same weights as single-file SGM checkpoints (fp16)
#   reference.safetensors + reference.json  references computed from exactly the stored fp16 values in fp32
# Every SGM file is checked here against diffusers' own single-file converters (bit-exact, every key), so
# the SGM layout is diffusers' reading of it, not this script's.
import json, os, sys, shutil, time, traceback
import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
import diffusers
from diffusers import (AutoencoderKL, UNet2DConditionModel, StableDiffusionXLPipeline,
                       StableDiffusionXLImg2ImgPipeline, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler,
                       DPMSolverMultistepScheduler)
from diffusers.loaders import single_file_utils as sfu

OUT = sys.argv[1]
VOCAB = sys.argv[2]
torch.set_grad_enabled(False)
torch.set_num_threads(8)

PROMPTS = ["a red circle on a blue background", "a large green star at the top on a white background", "",
           "A photo of an astronaut riding a horse on Mars, 4k!!", "café déjà vu",
           " ".join(["word%d" % i for i in range(60)])]

# SDXL's scheduler config (stabilityai/stable-diffusion-xl-base-1.0/scheduler): leading spacing, offset 1.
SCHED = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
             steps_offset=1, clip_sample=False, set_alpha_to_one=False, sample_max_value=1.0,
             timestep_spacing="leading", interpolation_type="linear", prediction_type="epsilon",
             use_karras_sigmas=False)

# Encoder 1: CLIP ViT-L stand-in (quick_gelu); encoder 2: OpenCLIP bigG stand-in (gelu, projection != width).
TE1 = dict(hidden_size=24, intermediate_size=40, num_hidden_layers=3, num_attention_heads=3, hidden_act="quick_gelu")
TE2 = dict(hidden_size=32, intermediate_size=56, num_hidden_layers=4, num_attention_heads=4, hidden_act="gelu",
           projection_dim=40)
ADD_T = 8  # addition_time_embed_dim
BASE_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(16, 24, 32),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 1, 2), attention_head_dim=(1, 2, 4), use_linear_projection=True,
    cross_attention_dim=TE1["hidden_size"] + TE2["hidden_size"], norm_num_groups=8,
    addition_embed_type="text_time", addition_time_embed_dim=ADD_T,
    projection_class_embeddings_input_dim=TE2["projection_dim"] + 6 * ADD_T, upcast_attention=False)
REFINER_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 24, 32, 40),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=2, attention_head_dim=(1, 3, 2, 5), use_linear_projection=True,
    cross_attention_dim=TE2["hidden_size"], norm_num_groups=8,
    addition_embed_type="text_time", addition_time_embed_dim=ADD_T,
    projection_class_embeddings_input_dim=TE2["projection_dim"] + 5 * ADD_T, upcast_attention=False)
# SDXL VAE: 2 layers per block, scaling factor 0.13025, force_upcast (fp16 overflows); 3 levels here (factor 4).
VAE = dict(block_out_channels=(8, 16, 16), in_channels=3, out_channels=3, layers_per_block=2,
           down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
           latent_channels=4, norm_num_groups=4, sample_size=64, scaling_factor=0.13025, force_upcast=True)
SIZE = 64


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


def build():
    torch.manual_seed(1500)
    tok1 = CLIPTokenizer(os.path.join(VOCAB, "vocab.json"), os.path.join(VOCAB, "merges.txt"),
                         pad_token="<|endoftext|>", model_max_length=77)
    tok2 = CLIPTokenizer(os.path.join(VOCAB, "vocab.json"), os.path.join(VOCAB, "merges.txt"),
                         pad_token="!", model_max_length=77)
    te1 = CLIPTextModel(clip_config(TE1, tok1.pad_token_id)).eval()
    te2 = CLIPTextModelWithProjection(clip_config(TE2, tok2.pad_token_id)).eval()
    unet = UNet2DConditionModel(**BASE_UNET).eval()
    refiner = UNet2DConditionModel(**REFINER_UNET).eval()
    vae = AutoencoderKL(**VAE).eval()
    for m in (te1, te2, unet, refiner, vae):
        perturb_and_round(m)
    return tok1, tok2, te1, te2, unet, refiner, vae


# ---------------------------------------------------------------------------------------------
# diffusers -> SGM (the layout of sd_xl_base_1.0.safetensors / sd_xl_refiner_1.0.safetensors)

RES = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
       ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]


def unet_to_sgm(sd, cfg):
    n, L = len(cfg["block_out_channels"]), cfg["layers_per_block"]
    pm = {"time_embedding.linear_1.": ("time_embed.0.", None), "time_embedding.linear_2.": ("time_embed.2.", None),
          "add_embedding.linear_1.": ("label_emb.0.0.", None), "add_embedding.linear_2.": ("label_emb.0.2.", None),
          "conv_in.": ("input_blocks.0.0.", None), "conv_norm_out.": ("out.0.", None), "conv_out.": ("out.2.", None),
          "mid_block.resnets.0.": ("middle_block.0.", RES), "mid_block.attentions.0.": ("middle_block.1.", None),
          "mid_block.resnets.1.": ("middle_block.2.", RES)}
    for i in range(n):
        for j in range(L):
            idx = 1 + i * (L + 1) + j
            pm[f"down_blocks.{i}.resnets.{j}."] = (f"input_blocks.{idx}.0.", RES)
            pm[f"down_blocks.{i}.attentions.{j}."] = (f"input_blocks.{idx}.1.", None)
        if i < n - 1:
            pm[f"down_blocks.{i}.downsamplers.0.conv."] = (f"input_blocks.{1 + i * (L + 1) + L}.0.op.", None)
        for j in range(L + 1):
            idx = i * (L + 1) + j
            pm[f"up_blocks.{i}.resnets.{j}."] = (f"output_blocks.{idx}.0.", RES)
            pm[f"up_blocks.{i}.attentions.{j}."] = (f"output_blocks.{idx}.1.", None)
        if i < n - 1:
            slot = 2 if "CrossAttn" in cfg["up_block_types"][i] else 1
            pm[f"up_blocks.{i}.upsamplers.0.conv."] = (f"output_blocks.{i * (L + 1) + L}.{slot}.conv.", None)
    return map_prefixes(sd, pm, "model.diffusion_model.")


def map_prefixes(sd, pm, out_prefix, post=None):
    out = {}
    for k, v in sd.items():
        hits = [p for p in pm if k.startswith(p)]
        if len(hits) != 1:
            raise RuntimeError(f"no single SGM name for {k}: {hits}")
        new, subs = pm[hits[0]]
        rest = k[len(hits[0]):]
        for a, b in subs or ():
            if rest.startswith(a + "."):
                rest = b + rest[len(a):]
        key = out_prefix + new + rest
        out[key] = post(key, v) if post else v
    return out


def vae_to_sgm(sd, cfg):
    n = len(cfg["block_out_channels"])
    res = [("conv_shortcut", "nin_shortcut")]
    att = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]
    pm = {"quant_conv.": ("quant_conv.", None), "post_quant_conv.": ("post_quant_conv.", None)}
    for side in ("encoder", "decoder"):
        pm.update({f"{side}.conv_in.": (f"{side}.conv_in.", None), f"{side}.conv_out.": (f"{side}.conv_out.", None),
                   f"{side}.conv_norm_out.": (f"{side}.norm_out.", None),
                   f"{side}.mid_block.resnets.0.": (f"{side}.mid.block_1.", res),
                   f"{side}.mid_block.resnets.1.": (f"{side}.mid.block_2.", res),
                   f"{side}.mid_block.attentions.0.": (f"{side}.mid.attn_1.", att)})
    for i in range(n):
        for j in range(cfg["layers_per_block"] + 1):
            pm[f"encoder.down_blocks.{i}.resnets.{j}."] = (f"encoder.down.{i}.block.{j}.", res)
            pm[f"decoder.up_blocks.{i}.resnets.{j}."] = (f"decoder.up.{n - 1 - i}.block.{j}.", res)
        pm[f"encoder.down_blocks.{i}.downsamplers.0.conv."] = (f"encoder.down.{i}.downsample.conv.", None)
        pm[f"decoder.up_blocks.{i}.upsamplers.0.conv."] = (f"decoder.up.{n - 1 - i}.upsample.conv.", None)

    def conv1x1(key, v):  # the original VAE's attention projections are 1x1 convolutions
        if ".mid.attn_1." in key and key.endswith(".weight") and v.ndim == 2:
            return v[:, :, None, None].contiguous()
        return v
    return map_prefixes(sd, pm, "first_stage_model.", conv1x1)


def clip_to_sgm(sd, prefix):
    # HF CLIPTextModel names under the original `transformer.text_model.` (transformers >= 5.6 drops the
    # `text_model.` level of CLIPTextModel; put it back as the SGM files have it).
    return {prefix + "transformer.text_model." + k.removeprefix("text_model."): v for k, v in sd.items()}


def openclip_to_sgm(sd, prefix, layers):
    g = lambda k: sd["text_model." + k]
    out = {prefix + "token_embedding.weight": g("embeddings.token_embedding.weight"),
           prefix + "positional_embedding": g("embeddings.position_embedding.weight"),
           prefix + "ln_final.weight": g("final_layer_norm.weight"),
           prefix + "ln_final.bias": g("final_layer_norm.bias"),
           prefix + "text_projection": sd["text_projection.weight"].T.contiguous(),
           prefix + "logit_scale": torch.tensor(4.6052)}
    for i in range(layers):
        s, d = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for a, b in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("self_attn.out_proj", "attn.out_proj"),
                     ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
            out[d + b + ".weight"], out[d + b + ".bias"] = g(s + a + ".weight"), g(s + a + ".bias")
        for w in ("weight", "bias"):
            out[d + "attn.in_proj_" + w] = torch.cat([g(s + f"self_attn.{p}_proj.{w}") for p in "qkv"]).contiguous()
    return out


def check_same(name, want, got):
    want = {k: v for k, v in want.items() if not k.endswith("position_ids")}
    got = {k: v for k, v in got.items() if not k.endswith("position_ids")}
    if set(want) != set(got):
        raise RuntimeError(f"{name}: key sets differ: missing {sorted(set(want) - set(got))[:5]}, "
                           f"extra {sorted(set(got) - set(want))[:5]}")
    for k in want:
        if want[k].shape != got[k].shape or not torch.equal(want[k].float(), got[k].float()):
            raise RuntimeError(f"{name}: {k} differs after diffusers' conversion")
    print(f"  {name}: {len(want)} tensors identical after diffusers' single-file conversion")


def write_sgm(path, te1, te2, unet, vae, refiner=False):
    h = lambda m: {k: v.half() for k, v in m.state_dict().items()}
    te2p = "conditioner.embedders.0.model." if refiner else "conditioner.embedders.1.model."
    ck = {}
    if te1 is not None:
        ck.update(clip_to_sgm(h(te1), "conditioner.embedders.0."))
    ck.update(openclip_to_sgm(h(te2), te2p, te2.config.num_hidden_layers))
    ck.update(unet_to_sgm(h(unet), dict(unet.config)))
    ck.update(vae_to_sgm(h(vae), dict(vae.config)))
    ck = {k: v.half().contiguous() for k, v in ck.items() if not k.endswith("position_ids")}
    save_file(ck, path, metadata={"format": "pt"})
    # Verify with diffusers' converters.
    check_same("unet", h(unet), sfu.convert_ldm_unet_checkpoint(ck, dict(unet.config)))
    check_same("vae", h(vae), sfu.convert_ldm_vae_checkpoint(ck, dict(vae.config)))
    got2 = sfu.convert_open_clip_checkpoint(te2, ck, prefix=te2p)
    check_same("text_encoder_2", h(te2), got2)
    if te1 is not None:
        got1 = {k.removeprefix("text_model."): v for k, v in sfu.convert_ldm_clip_checkpoint(ck).items()
                if not k.startswith("conditioner")}
        check_same("text_encoder", h(te1), got1)
    print(f"  {os.path.basename(path)}: {len(ck)} tensors, {os.path.getsize(path)} bytes")


# ---------------------------------------------------------------------------------------------

def sched(cls, extra=None):
    kw = dict(SCHED)
    kw.update(extra or {})
    return cls.from_config(kw), kw


def base_pipe(c, scheduler):
    tok1, tok2, te1, te2, unet, refiner, vae = c
    return StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1,
                                     tokenizer_2=tok2, unet=unet, scheduler=scheduler,
                                     force_zeros_for_empty_prompt=True, add_watermarker=False)


def base_i2i(c, scheduler):
    tok1, tok2, te1, te2, unet, refiner, vae = c
    return StableDiffusionXLImg2ImgPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1,
                                            tokenizer_2=tok2, unet=unet, scheduler=scheduler,
                                            requires_aesthetics_score=False, force_zeros_for_empty_prompt=True,
                                            add_watermarker=False)


def refiner_pipe(c, scheduler):
    tok1, tok2, te1, te2, unet, refiner, vae = c
    return StableDiffusionXLImg2ImgPipeline(vae=vae, text_encoder=None, text_encoder_2=te2, tokenizer=None,
                                            tokenizer_2=tok2, unet=refiner, scheduler=scheduler,
                                            requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
                                            add_watermarker=False)


def run_case(pipe, store, name, kw, keep_steps):
    pipe.set_progress_bar_config(disable=True)
    steps, ts = [], []

    def cb(p, i, t, kwargs):
        steps.append(kwargs["latents"].clone())
        ts.append(float(t))
        return kwargs
    lat = pipe(output_type="latent", callback_on_step_end=cb, **kw).images
    store[f"pipe/{name}/latents"] = lat.contiguous()
    if keep_steps:
        for i, l in enumerate(steps):
            store[f"pipe/{name}/step{i:02d}"] = l.contiguous()
    return lat, ts


def pipelines(c, ref, meta):
    tok1, tok2, te1, te2, unet, refiner, vae = c
    P = PROMPTS[0]
    cases = {
        "txt2img_euler": (EulerDiscreteScheduler, {}, dict(guidance_scale=5.0), True),
        "txt2img_euler_a": (EulerAncestralDiscreteScheduler, {}, dict(guidance_scale=5.0), False),
        "txt2img_dpmpp_2m_karras": (DPMSolverMultistepScheduler,
                                    dict(algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True),
                                    dict(guidance_scale=5.0), False),
        "txt2img_euler_negative": (EulerDiscreteScheduler, {},
                                   dict(guidance_scale=6.0, negative_prompt="blurry, low quality"), False),
        "txt2img_euler_prompt2": (EulerDiscreteScheduler, {},
                                  dict(guidance_scale=5.0, prompt_2="a yellow square at the bottom",
                                       negative_prompt="green", negative_prompt_2="a black star"), False),
        "txt2img_euler_microcond": (EulerDiscreteScheduler, {},
                                    dict(guidance_scale=5.0, height=64, width=48, original_size=(96, 128),
                                         crops_coords_top_left=(8, 16), target_size=(64, 40),
                                         negative_original_size=(32, 32), negative_crops_coords_top_left=(4, 0),
                                         negative_target_size=(48, 48)), False),
        "txt2img_euler_nocfg": (EulerDiscreteScheduler, {}, dict(guidance_scale=1.0), False),
        "txt2img_euler_batch2": (EulerDiscreteScheduler, {}, dict(guidance_scale=5.0, num_images_per_prompt=2),
                                 False),
    }
    meta["pipelines"] = {}
    for name, (cls, extra, kw, keep) in cases.items():
        t0 = time.time()
        s, scfg = sched(cls, extra)
        kw = dict(kw)
        kw.setdefault("height", SIZE)
        kw.setdefault("width", SIZE)
        seed = 1234 + len(meta["pipelines"])
        lat, ts = run_case(base_pipe(c, s), ref, name,
                           dict(prompt=P, num_inference_steps=8, generator=torch.Generator("cpu").manual_seed(seed),
                                **kw), keep)
        if name == "txt2img_euler":
            img = base_pipe(c, s).image_processor.postprocess(vae.decode(lat / vae.config.scaling_factor).sample,
                                                              output_type="pt")
            ref[f"pipe/{name}/image"] = img.contiguous()
        meta["pipelines"][name] = dict(model="base", pipeline="StableDiffusionXLPipeline", scheduler=cls.__name__,
                                       scheduler_config=scfg, prompt=P, steps=8, seed=seed, timesteps=ts,
                                       **{k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()})
        print(f"  {name}: {time.time() - t0:.1f}s")
    g = torch.Generator("cpu").manual_seed(7)
    init = torch.rand((1, 3, SIZE, SIZE), generator=g)
    ref["pipe/init_image"] = init.contiguous()
    # img2img on the base
    s, scfg = sched(EulerDiscreteScheduler)
    kw = dict(prompt=P, image=init, strength=0.6, num_inference_steps=10, guidance_scale=5.0)
    _, ts = run_case(base_i2i(c, s), ref, "img2img_euler",
                     dict(kw, generator=torch.Generator("cpu").manual_seed(99)), True)
    meta["pipelines"]["img2img_euler"] = dict(model="base", pipeline="StableDiffusionXLImg2ImgPipeline",
                                              scheduler="EulerDiscreteScheduler", scheduler_config=scfg, prompt=P,
                                              strength=0.6, steps=10, guidance_scale=5.0, seed=99, timesteps=ts,
                                              init_image="pipe/init_image ([0,1], NCHW)")
    # refiner alone as img2img (aesthetic scores, empty negative prompt encoded: force_zeros_for_empty_prompt false)
    s, scfg = sched(EulerDiscreteScheduler)
    kw = dict(prompt=P, image=init, strength=0.3, num_inference_steps=10, guidance_scale=5.0, aesthetic_score=6.5,
              negative_aesthetic_score=2.0)
    _, ts = run_case(refiner_pipe(c, s), ref, "refiner_img2img",
                     dict(kw, generator=torch.Generator("cpu").manual_seed(5)), True)
    meta["pipelines"]["refiner_img2img"] = dict(model="refiner", pipeline="StableDiffusionXLImg2ImgPipeline",
                                                scheduler="EulerDiscreteScheduler", scheduler_config=scfg,
                                                prompt=P, strength=0.3, steps=10, guidance_scale=5.0,
                                                aesthetic_score=6.5, negative_aesthetic_score=2.0, seed=5,
                                                timesteps=ts, init_image="pipe/init_image ([0,1], NCHW)")
    # base -> refiner hand-off on one request: denoising_end on the base, denoising_start on the refiner
    for name, cls in (("handoff_euler", EulerDiscreteScheduler), ("handoff_euler_a", EulerAncestralDiscreteScheduler)):
        s, scfg = sched(cls)
        lat, ts1 = run_case(base_pipe(c, s), ref, name + "/base",
                            dict(prompt=P, height=SIZE, width=SIZE, num_inference_steps=10, guidance_scale=5.0,
                                 denoising_end=0.8, generator=torch.Generator("cpu").manual_seed(42)), False)
        s2, _ = sched(cls)
        _, ts2 = run_case(refiner_pipe(c, s2), ref, name,
                          dict(prompt=P, image=lat, num_inference_steps=10, guidance_scale=5.0, denoising_start=0.8,
                               generator=torch.Generator("cpu").manual_seed(43)), False)
        meta["pipelines"][name] = dict(model="base+refiner", scheduler=cls.__name__, scheduler_config=scfg, prompt=P,
                                       height=SIZE, width=SIZE, steps=10, guidance_scale=5.0, denoising_end=0.8,
                                       denoising_start=0.8, base_seed=42, refiner_seed=43, base_timesteps=ts1,
                                       refiner_timesteps=ts2,
                                       note="base: StableDiffusionXLPipeline(output_type='latent', denoising_end) -> "
                                            "pipe/<name>/base/latents; refiner: StableDiffusionXLImg2ImgPipeline("
                                            "image=those latents, denoising_start) -> pipe/<name>/latents")


def components(c, ref, meta):
    tok1, tok2, te1, te2, unet, refiner, vae = c
    ids1 = tok1(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    ids2 = tok2(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    ref["tok/ids1"], ref["tok/ids2"] = ids1.to(torch.int64).contiguous(), ids2.to(torch.int64).contiguous()
    o1 = te1(ids1, output_hidden_states=True)
    ref["te1/last_hidden_state"] = o1.last_hidden_state.contiguous()
    ref["te1/penultimate"] = o1.hidden_states[-2].contiguous()
    o2 = te2(ids2, output_hidden_states=True)
    ref["te2/last_hidden_state"] = o2.last_hidden_state.contiguous()
    ref["te2/penultimate"] = o2.hidden_states[-2].contiguous()
    ref["te2/text_embeds"] = o2.text_embeds.contiguous()
    # the pipeline's own prompt encoding (base: zeros for an absent negative prompt; refiner: encodes "")
    pipe = base_pipe(c, sched(EulerDiscreteScheduler)[0])
    pe, ne, pp, npool = pipe.encode_prompt(prompt=PROMPTS[0], device="cpu", num_images_per_prompt=1,
                                           do_classifier_free_guidance=True, negative_prompt="blurry, low quality")
    ref["enc/base/prompt_embeds"], ref["enc/base/negative_prompt_embeds"] = pe.contiguous(), ne.contiguous()
    ref["enc/base/pooled"], ref["enc/base/negative_pooled"] = pp.contiguous(), npool.contiguous()
    rp = refiner_pipe(c, sched(EulerDiscreteScheduler)[0])
    pe, ne, pp, npool = rp.encode_prompt(prompt=PROMPTS[0], device="cpu", num_images_per_prompt=1,
                                         do_classifier_free_guidance=True)
    ref["enc/refiner/prompt_embeds"], ref["enc/refiner/negative_prompt_embeds"] = pe.contiguous(), ne.contiguous()
    ref["enc/refiner/pooled"], ref["enc/refiner/negative_pooled"] = pp.contiguous(), npool.contiguous()
    g = torch.Generator("cpu").manual_seed(5)
    for name, m, tids in (("unet", unet, [[64, 64, 0, 0, 64, 64], [96, 80, 8, 4, 64, 48]]),
                          ("refiner", refiner, [[64, 64, 0, 0, 6.0], [80, 96, 4, 8, 2.5]])):
        x = torch.randn((2, 4, 16, 16), generator=g)
        ctx = torch.randn((2, 77, m.config.cross_attention_dim), generator=g)
        te = torch.randn((2, TE2["projection_dim"]), generator=g)
        tt = torch.tensor([999.0, 421.0])
        time_ids = torch.tensor(tids, dtype=torch.float32)
        ref[f"{name}/in_sample"], ref[f"{name}/in_timesteps"], ref[f"{name}/in_context"] = x, tt, ctx
        ref[f"{name}/in_text_embeds"], ref[f"{name}/in_time_ids"] = te, time_ids
        cond = {"text_embeds": te, "time_ids": time_ids}
        ref[f"{name}/out"] = m(x, tt, encoder_hidden_states=ctx, added_cond_kwargs=cond).sample.contiguous()
        # odd latent size (12x10): the up path must follow the skip connections' sizes
        xo = torch.randn((2, 4, 12, 10), generator=g)
        ref[f"{name}/in_sample_odd"] = xo
        ref[f"{name}/out_odd"] = m(xo, 250, encoder_hidden_states=ctx, added_cond_kwargs=cond).sample.contiguous()
    z = torch.randn((1, 4, 16, 16), generator=g)
    ref["vae/dec_in"], ref["vae/dec_out"] = z, vae.decode(z).sample.contiguous()
    im = torch.rand((1, 3, SIZE, SIZE), generator=g) * 2 - 1
    post = vae.encode(im).latent_dist
    ref["vae/enc_in"], ref["vae/enc_mean"], ref["vae/enc_logvar"] = im, post.mean.contiguous(), post.logvar.contiguous()
    meta["prompts"] = PROMPTS
    meta["vae_scaling_factor"] = vae.config.scaling_factor
    meta["unet_time_ids"] = "unet/in_time_ids rows: original_size(h,w) + crops_coords_top_left(y,x) + target_size(h,w)"
    meta["refiner_time_ids"] = "refiner/in_time_ids rows: original_size(h,w) + crops_coords_top_left(y,x) + aesthetic score"
    meta["unet_odd"] = "unet/out_odd, refiner/out_odd: in_sample_odd at scalar timestep 250, same context/added conds"


def main():
    t0 = time.time()
    os.makedirs(OUT, exist_ok=True)
    c = build()
    tok1, tok2, te1, te2, unet, refiner, vae = c
    for d in ("base", "refiner"):
        shutil.rmtree(os.path.join(OUT, d), ignore_errors=True)
    s, _ = sched(EulerDiscreteScheduler)
    for name, p in (("base", base_pipe(c, s)), ("refiner", refiner_pipe(c, s))):
        p.to(torch.float16)
        p.save_pretrained(os.path.join(OUT, name), safe_serialization=True)
        p.to(torch.float32)
    print("saved diffusers folders", f"{time.time() - t0:.1f}s")
    for m in (te1, te2, unet, refiner, vae):  # the fp16 round trip must be exact
        for p in m.parameters():
            assert torch.equal(p, p.half().float())
    write_sgm(os.path.join(OUT, "base.safetensors"), te1, te2, unet, vae)
    write_sgm(os.path.join(OUT, "refiner.safetensors"), None, te2, refiner, vae, refiner=True)
    print("keys te1:", list(te1.state_dict())[:3], "te2:", list(te2.state_dict())[:3])
    ref = {}
    meta = {"diffusers": diffusers.__version__, "torch": torch.__version__,
            "configs": {"text_encoder": TE1, "text_encoder_2": TE2, "unet": BASE_UNET, "refiner_unet": REFINER_UNET,
                        "vae": VAE, "scheduler": SCHED}}
    errors = []
    for part in (components, pipelines):
        try:
            part(c, ref, meta)
        except Exception:
            traceback.print_exc()
            errors.append(part.__name__)
        print(part.__name__, f"done {time.time() - t0:.1f}s")
    meta["errors"] = errors
    save_file({k: v.detach().clone().contiguous() for k, v in ref.items()}, os.path.join(OUT, "reference.safetensors"))
    json.dump(meta, open(os.path.join(OUT, "reference.json"), "w"), indent=1, default=str)
    print("tensors:", len(ref), "errors:", errors, f"total {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
