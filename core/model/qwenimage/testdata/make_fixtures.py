#!/usr/bin/env python3
"""Builds the tiny Qwen-Image parity fixtures for core/model/qwenimage.

Run on the GPU machine (PyTorch + transformers + tokenizers, diffusers source
on PYTHONPATH); everything is computed on the CPU in float32 so that the Go
CPU backend can be held to 1e-4. Random tiny models are perturbed from their
init, rounded to the dtype they are stored in (bf16 / fp16), saved in the
diffusers folder layout (sharded safetensors with index files), loaded back,
and every reference is computed from the loaded (exactly stored) weights.

Output: OUT_DIR/qwenimage-fixtures.tar.xz holding
  pipe/                      a QwenImagePipeline folder (tokenizer/,
                             text_encoder/, transformer/, vae/, scheduler/)
  te_b/ tr_b/ vae_b/         extra component configs (varied shapes)
  refs.safetensors           float32 references
  meta.json                  prompts, ids, settings, versions
"""
import json
import math
import os
import shutil
import sys
import tarfile
import traceback

import numpy as np
import torch

torch.manual_seed(0)
torch.set_num_threads(8)
OUT = os.environ.get("OUT", "out")
ROOT = os.path.join(os.environ.get("WORK", "/tmp"), "qwenimage-fixtures")
shutil.rmtree(ROOT, ignore_errors=True)
os.makedirs(ROOT)
REFS = {}
META = {"errors": []}


def ref(name, t):
    REFS[name] = t.detach().to(torch.float32).contiguous().cpu()


def section(fn):
    try:
        fn()
    except Exception:  # keep going: one broken section must not lose the rest
        tb = traceback.format_exc()
        print(tb, flush=True)
        META["errors"].append(f"{fn.__name__}: {tb[-2000:]}")


def perturb(model, dtype):
    """Moves every parameter away from its init and rounds it to dtype."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() <= 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
            else:
                s = max(float(p.std()), 0.02)
                p.add_(torch.randn(p.shape, generator=g) * s * 0.5)
            p.copy_(p.to(dtype).to(torch.float32))
    return model


import transformers  # noqa: E402
import tokenizers  # noqa: E402

sys.path.insert(0, os.environ.get("DIFFUSERS_SRC", "src"))
import diffusers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
)

META["versions"] = {
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "tokenizers": tokenizers.__version__,
    "diffusers": diffusers.__version__,
    "python": sys.version,
}
print(META["versions"], flush=True)

PIPE = os.path.join(ROOT, "pipe")
os.makedirs(PIPE)

# ---------------------------------------------------------------- tokenizer
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
PROMPTS = [
    "A red fox sitting in the snow, 4k photo",
    "Ein Café über'm Fluß — naïve façade; it's 12:30\n\nand   spaces\ttabs",
    "a cat",
    "日本語のテキスト and emoji 🦊🔥 <|im_end|> inside",
]
NEGATIVE = "blurry, low quality"
VOCAB_SIZE_TOKENS = 420
TE_VOCAB = 448


def make_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    corpus = [TEMPLATE.format(p) for p in PROMPTS] * 3 + [
        "the quick brown fox jumps over the lazy dog. The image shows a photo of colors, shapes and text.",
        "Describe the image by detailing the color, shape, size, texture",
    ] * 5
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE_TOKENS,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens(SPECIALS)
    tdir = os.path.join(PIPE, "tokenizer")
    os.makedirs(tdir, exist_ok=True)
    tok.save(os.path.join(tdir, "tokenizer.json"))
    tok.model.save(tdir)  # vocab.json + merges.txt
    base = tok.get_vocab_size(with_added_tokens=False)
    added = {s: tok.token_to_id(s) for s in SPECIALS}
    with open(os.path.join(tdir, "added_tokens.json"), "w") as f:
        json.dump(added, f, indent=2)
    cfg = {
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
            for s, i in added.items()
        },
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "model_max_length": 131072,
        "padding_side": "right",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "clean_up_tokenization_spaces": False,
    }
    with open(os.path.join(tdir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    META["tokenizer"] = {"base_vocab": base, "added": added}
    ids_tok = {p: tok.encode(TEMPLATE.format(p)).ids for p in PROMPTS + [NEGATIVE, ""]}
    plain = {p: tok.encode(p).ids for p in PROMPTS}
    META["tokenizer"]["ids_tokenizers_lib"] = ids_tok
    META["tokenizer"]["ids_plain"] = plain
    return tdir


def load_hf_tokenizer(tdir):
    try:
        t = transformers.Qwen2Tokenizer.from_pretrained(tdir)
        META["tokenizer"]["hf_class"] = type(t).__name__
        return t
    except Exception:
        print(traceback.format_exc(), flush=True)
        t = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(tdir, "tokenizer.json"))
        t.pad_token = "<|endoftext|>"
        META["tokenizer"]["hf_class"] = "PreTrainedTokenizerFast(fallback)"
        return t


# -------------------------------------------------------------- text encoder
def te_config(hidden, layers, heads, kv_heads, inter, mrope):
    text = dict(
        vocab_size=TE_VOCAB,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        max_position_embeddings=4096,
        hidden_act="silu",
        tie_word_embeddings=False,
        rope_scaling={"type": "mrope", "rope_type": "default", "mrope_section": mrope},
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope},
        torch_dtype="float32",
    )
    vision = dict(
        depth=1,
        hidden_size=16,
        intermediate_size=24,
        num_heads=2,
        in_chans=3,
        in_channels=3,
        out_hidden_size=hidden,
        patch_size=2,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=8,
        fullatt_block_indexes=[0],
        tokens_per_second=2,
    )
    cfg = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=TE_VOCAB - 1,
                                        video_token_id=TE_VOCAB - 2, vision_start_token_id=TE_VOCAB - 3,
                                        vision_end_token_id=TE_VOCAB - 4)
    tc = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    assert tc.hidden_size == hidden and tc.num_hidden_layers == layers, tc
    return cfg


def build_te(cfg, path):
    m = transformers.Qwen2_5_VLForConditionalGeneration(cfg).eval()
    perturb(m, torch.bfloat16)
    m.to(torch.bfloat16).save_pretrained(path, safe_serialization=True, max_shard_size="40KB")
    m = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(path, torch_dtype=torch.float32).eval()
    return m


TOK_DIR = None
TE_A = None


def sec_tokenizer():
    global TOK_DIR
    TOK_DIR = make_tokenizer()
    hf = load_hf_tokenizer(TOK_DIR)
    ids_hf = {p: hf(TEMPLATE.format(p))["input_ids"] for p in PROMPTS + [NEGATIVE, ""]}
    META["tokenizer"]["ids"] = ids_hf
    META["tokenizer"]["hf_matches_tokenizers_lib"] = ids_hf == META["tokenizer"]["ids_tokenizers_lib"]
    print("tokenizer", META["tokenizer"]["hf_class"], "match", META["tokenizer"]["hf_matches_tokenizers_lib"], flush=True)


def sec_text_encoders():
    global TE_A
    cfg_a = te_config(hidden=32, layers=2, heads=4, kv_heads=2, inter=48, mrope=[1, 1, 2])
    TE_A = build_te(cfg_a, os.path.join(PIPE, "text_encoder"))
    META["te_a_config"] = TE_A.config.to_dict()
    # Component B: other widths/heads; a right-padded batch of raw ids.
    cfg_b = te_config(hidden=48, layers=3, heads=3, kv_heads=1, inter=40, mrope=[2, 3, 3])
    te_b = build_te(cfg_b, os.path.join(ROOT, "te_b"))
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, TE_VOCAB - 8, (2, 11), generator=g)
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, 8:] = 0
    ids[1, 8:] = 0
    with torch.no_grad():
        out = te_b(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    hs = out.hidden_states
    ref("te_b.ids", ids.float())
    ref("te_b.mask", mask.float())
    ref("te_b.hidden_last", hs[-1])
    ref("te_b.hidden_layer1", hs[1])
    ref("te_b.embed", hs[0])
    META["te_b_n_hidden_states"] = len(hs)
    lm = getattr(te_b, "model", te_b)
    lm = getattr(lm, "language_model", lm)
    with torch.no_grad():
        last = lm(input_ids=ids, attention_mask=mask).last_hidden_state
    META["te_b_hidden_last_is_normed"] = bool(torch.allclose(last, hs[-1]))
    print("te_b last normed:", META["te_b_hidden_last_is_normed"], flush=True)
    print("te keys sample:", list(te_b.state_dict().keys())[:4], flush=True)


# --------------------------------------------------------------- transformer
def build_tr(path, **kw):
    m = QwenImageTransformer2DModel(**kw).eval()
    perturb(m, torch.bfloat16)
    m.to(torch.bfloat16).save_pretrained(path, safe_serialization=True, max_shard_size="60KB")
    return QwenImageTransformer2DModel.from_pretrained(path, torch_dtype=torch.float32).eval()


Z_A = 4


def sec_transformers():
    tr_a = build_tr(os.path.join(PIPE, "transformer"), patch_size=2, in_channels=4 * Z_A, out_channels=Z_A, num_layers=2,
                    attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(4, 6, 6))
    tr_b = build_tr(os.path.join(ROOT, "tr_b"), patch_size=2, in_channels=32, out_channels=8, num_layers=3,
                    attention_head_dim=12, num_attention_heads=3, joint_attention_dim=24, axes_dims_rope=(2, 4, 6))
    g = torch.Generator().manual_seed(11)
    # B: odd grid (3x5 patches), a padded text row, two timesteps.
    x = torch.randn(2, 15, 32, generator=g)
    ctx = torch.randn(2, 7, 24, generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    t = torch.tensor([0.7, 0.25])
    with torch.no_grad():
        out = tr_b(hidden_states=x, encoder_hidden_states=ctx, encoder_hidden_states_mask=mask, timestep=t,
                   img_shapes=[[(1, 3, 5)]] * 2, return_dict=False)[0]
    ref("tr_b.x", x)
    ref("tr_b.ctx", ctx)
    ref("tr_b.mask", mask.float())
    ref("tr_b.t", t)
    ref("tr_b.out", out)
    # A: even grid 4x2, no mask, batch 1, with block-0 intermediates.
    x = torch.randn(1, 8, 4 * Z_A, generator=g)
    ctx = torch.randn(1, 5, 32, generator=g)
    t = torch.tensor([0.5])
    cap = {}
    h = tr_a.transformer_blocks[0].register_forward_hook(lambda m, i, o: cap.__setitem__("b0", o))
    with torch.no_grad():
        out = tr_a(hidden_states=x, encoder_hidden_states=ctx, encoder_hidden_states_mask=None, timestep=t,
                   img_shapes=[[(1, 4, 2)]], return_dict=False)[0]
    h.remove()
    ref("tr_a.x", x)
    ref("tr_a.ctx", ctx)
    ref("tr_a.t", t)
    ref("tr_a.out", out)
    ref("tr_a.block0_txt", cap["b0"][0])
    ref("tr_a.block0_img", cap["b0"][1])


# ----------------------------------------------------------------------- VAE
LAT_MEAN = [-0.75, 0.3, 0.1, -0.2, 0.5, -0.1, 0.2, 0.05]
LAT_STD = [2.8, 1.4, 2.3, 0.9, 1.2, 1.7, 2.6, 2.0]


def build_vae(path, **kw):
    m = AutoencoderKLQwenImage(**kw).eval()
    perturb(m, torch.float16)
    m.to(torch.float16).save_pretrained(path, safe_serialization=True)
    return AutoencoderKLQwenImage.from_pretrained(path, torch_dtype=torch.float32).eval()


def vae_refs(vae, prefix, img, z):
    cap = {}
    h1 = vae.decoder.conv_out.register_forward_hook(lambda m, i, o: cap.__setitem__("dec_pre", o))
    with torch.no_grad():
        post = vae.encode(img).latent_dist
        dec = vae.decode(z, return_dict=False)[0]
    h1.remove()
    ref(prefix + ".img", img)
    ref(prefix + ".enc_mean", post.mean)
    ref(prefix + ".enc_logvar", post.logvar)
    ref(prefix + ".z", z)
    ref(prefix + ".dec", dec)
    ref(prefix + ".dec_preclamp", cap["dec_pre"])
    META[prefix + "_dec_saturated"] = float((dec.abs() >= 1).float().mean())
    print(prefix, "saturated fraction", META[prefix + "_dec_saturated"], flush=True)


def sec_vaes():
    vae_a = build_vae(os.path.join(PIPE, "vae"), base_dim=8, z_dim=Z_A, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                      temperal_downsample=[False, True, True], latents_mean=LAT_MEAN[:Z_A], latents_std=LAT_STD[:Z_A])
    vae_b = build_vae(os.path.join(ROOT, "vae_b"), base_dim=4, z_dim=8, dim_mult=[1, 2, 2], num_res_blocks=2,
                      temperal_downsample=[False, True], latents_mean=LAT_MEAN, latents_std=LAT_STD)
    g = torch.Generator().manual_seed(13)
    vae_refs(vae_a, "vae_a", torch.rand(1, 3, 1, 32, 24, generator=g) * 2 - 1, torch.randn(1, Z_A, 1, 4, 3, generator=g))
    vae_refs(vae_b, "vae_b", torch.rand(1, 3, 1, 24, 16, generator=g) * 2 - 1, torch.randn(1, 8, 1, 5, 7, generator=g))


# ------------------------------------------------------------------ pipeline
SCHED = dict(
    base_image_seq_len=256,
    base_shift=0.5,
    invert_sigmas=False,
    max_image_seq_len=8192,
    max_shift=0.9,
    num_train_timesteps=1000,
    shift=1.0,
    shift_terminal=0.02,
    stochastic_sampling=False,
    time_shift_type="exponential",
    use_beta_sigmas=False,
    use_dynamic_shifting=True,
    use_exponential_sigmas=False,
    use_karras_sigmas=False,
)


def sec_pipeline():
    sched = FlowMatchEulerDiscreteScheduler(**SCHED)
    sched.save_pretrained(os.path.join(PIPE, "scheduler"))
    index = {
        "_class_name": "QwenImagePipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "QwenImageTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLQwenImage"],
    }
    with open(os.path.join(PIPE, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    pipe = QwenImagePipeline(
        scheduler=sched,
        vae=AutoencoderKLQwenImage.from_pretrained(os.path.join(PIPE, "vae"), torch_dtype=torch.float32),
        text_encoder=TE_A,
        tokenizer=load_hf_tokenizer(TOK_DIR),
        transformer=QwenImageTransformer2DModel.from_pretrained(os.path.join(PIPE, "transformer"),
                                                                torch_dtype=torch.float32),
    )
    pipe.set_progress_bar_config(disable=True)
    # Prompt embeddings: a padded batch of all prompts.
    with torch.no_grad():
        emb, mask = pipe._get_qwen_prompt_embeds(PROMPTS, device=torch.device("cpu"))
    ref("prompt_embeds", emb)
    ref("prompt_embeds_mask", mask.float())
    META["template"] = pipe.prompt_template_encode
    META["drop_idx"] = pipe.prompt_template_encode_start_idx
    META["prompts"] = PROMPTS
    META["negative"] = NEGATIVE
    # Scheduler schedules for a few sequence lengths.
    sch = []
    for steps, seq in [(4, 12), (20, 4096), (50, 6889), (7, 300)]:
        s = FlowMatchEulerDiscreteScheduler(**SCHED)
        sig = np.linspace(1.0, 1 / steps, steps)
        from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift
        mu = calculate_shift(seq, SCHED["base_image_seq_len"], SCHED["max_image_seq_len"], SCHED["base_shift"],
                             SCHED["max_shift"])
        s.set_timesteps(sigmas=sig, mu=mu)
        sch.append({"steps": steps, "seq": seq, "mu": mu, "sigmas": s.sigmas.tolist(), "timesteps": s.timesteps.tolist()})
    META["schedules"] = sch

    H, W, steps, seed = 64, 48, 4, 42
    from diffusers.utils.torch_utils import randn_tensor
    noise = randn_tensor((1, 1, Z_A, H // 8, W // 8), generator=torch.Generator("cpu").manual_seed(seed))
    ref("pipe.noise", noise)
    runs = {
        "t2i": dict(prompt=PROMPTS[0], true_cfg_scale=1.0),
        "t2i_cfg": dict(prompt=PROMPTS[0], negative_prompt=NEGATIVE, true_cfg_scale=4.0),
    }
    META["pipe"] = {"height": H, "width": W, "steps": steps, "seed": seed, "runs": {}}
    for name, kw in runs.items():
        with torch.no_grad():
            lat = pipe(height=H, width=W, num_inference_steps=steps, output_type="latent",
                       generator=torch.Generator("cpu").manual_seed(seed), **kw).images
            img = pipe(height=H, width=W, num_inference_steps=steps, output_type="np",
                       generator=torch.Generator("cpu").manual_seed(seed), **kw).images
        ref(f"pipe.{name}.latents", lat)
        ref(f"pipe.{name}.image", torch.from_numpy(np.asarray(img)))
        META["pipe"]["runs"][name] = {k: v for k, v in kw.items()}
        print(name, lat.shape, float(lat.abs().mean()), flush=True)

    # img2img
    from diffusers import QwenImageImg2ImgPipeline
    from PIL import Image

    i2i = QwenImageImg2ImgPipeline(**pipe.components)
    i2i.set_progress_bar_config(disable=True)
    yy, xx = np.mgrid[0:H, 0:W]
    arr = np.stack([(xx * 5) % 256, (yy * 4) % 256, ((xx + yy) * 3) % 256], -1).astype(np.uint8)
    ref("i2i.image_u8", torch.from_numpy(arr.astype(np.float32)))
    pil = Image.fromarray(arr)
    kw = dict(prompt=PROMPTS[2], negative_prompt=NEGATIVE, true_cfg_scale=2.5, strength=0.6)
    seed2, steps2 = 5, 5
    with torch.no_grad():
        lat = i2i(image=pil, height=H, width=W, num_inference_steps=steps2, output_type="latent",
                  generator=torch.Generator("cpu").manual_seed(seed2), **kw).images
    g = torch.Generator("cpu").manual_seed(seed2)
    post_noise = randn_tensor((1, Z_A, 1, H // 8, W // 8), generator=g)
    noise2 = randn_tensor((1, 1, Z_A, H // 8, W // 8), generator=g)
    ref("i2i.posterior_noise", post_noise)
    ref("i2i.noise", noise2)
    ref("i2i.latents", lat)
    META["i2i"] = dict(kw, seed=seed2, steps=steps2, height=H, width=W)
    print("i2i", lat.shape, flush=True)


section(sec_tokenizer)
section(sec_text_encoders)
section(sec_transformers)
section(sec_vaes)
section(sec_pipeline)

from safetensors.torch import save_file  # noqa: E402

save_file(REFS, os.path.join(ROOT, "refs.safetensors"))
with open(os.path.join(ROOT, "meta.json"), "w") as f:
    json.dump(META, f, indent=1, default=str)
os.makedirs(OUT, exist_ok=True)
with tarfile.open(os.path.join(OUT, "qwenimage-fixtures.tar.xz"), "w:xz") as tf:
    tf.add(ROOT, arcname="qwenimage")
for dp, dn, fn in os.walk(ROOT):
    for f in fn:
        p = os.path.join(dp, f)
        print(f"{os.path.getsize(p):9d} {os.path.relpath(p, ROOT)}")
print("errors:", len(META["errors"]))
