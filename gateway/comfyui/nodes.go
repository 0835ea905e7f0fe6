package comfyui

import (
	"fmt"
	"sort"
	"strings"
)

// samplerMap maps ComfyUI's (sampler_name, scheduler) to Kiln's sampler.
// ComfyUI's "normal" and "simple" schedules are the model's own discrete
// timestep schedule, which Kiln's samplers use unless Karras is asked for.
var samplerMap = map[[2]string]string{
	{"euler", "normal"}: "euler", {"euler", "simple"}: "euler", {"euler", "karras"}: "euler_karras",
	{"euler_ancestral", "normal"}: "euler_a", {"euler_ancestral", "simple"}: "euler_a",
	{"heun", "normal"}: "heun", {"heun", "simple"}: "heun", {"heun", "karras"}: "heun_karras",
	{"ddim", "normal"}: "ddim", {"ddim", "ddim_uniform"}: "ddim", {"ddim", "simple"}: "ddim",
	{"ddpm", "normal"}: "ddpm", {"ddpm", "simple"}: "ddpm",
	{"dpmpp_2m", "normal"}: "dpmpp_2m", {"dpmpp_2m", "simple"}: "dpmpp_2m", {"dpmpp_2m", "karras"}: "dpmpp_2m_karras",
	{"dpmpp_2m_sde", "normal"}: "dpmpp_2m_sde", {"dpmpp_2m_sde", "simple"}: "dpmpp_2m_sde", {"dpmpp_2m_sde", "karras"}: "dpmpp_2m_sde_karras",
	{"dpmpp_2m_sde_gpu", "normal"}: "dpmpp_2m_sde", {"dpmpp_2m_sde_gpu", "simple"}: "dpmpp_2m_sde", {"dpmpp_2m_sde_gpu", "karras"}: "dpmpp_2m_sde_karras",
	{"uni_pc", "normal"}: "unipc", {"uni_pc", "simple"}: "unipc", {"uni_pc_bh2", "normal"}: "unipc",
	{"lcm", "normal"}: "lcm", {"lcm", "simple"}: "lcm", {"lcm", "sgm_uniform"}: "lcm",
}

// samplerNames and schedulerNames are the choices /object_info offers.
func samplerNames() (samplers, schedulers []string) {
	a, b := map[string]bool{}, map[string]bool{}
	for k := range samplerMap {
		a[k[0]], b[k[1]] = true, true
	}
	return sortedSet(a), sortedSet(b)
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// kilnSampler maps ComfyUI's names to Kiln's sampler.
func kilnSampler(sampler, scheduler string) (string, error) {
	if s, ok := samplerMap[[2]string{sampler, scheduler}]; ok {
		return s, nil
	}
	var with []string
	for k := range samplerMap {
		if k[0] == sampler {
			with = append(with, k[1])
		}
	}
	if len(with) > 0 {
		sort.Strings(with)
		return "", fmt.Errorf("sampler %q runs with the schedulers %s in Kiln, not %q", sampler, strings.Join(with, ", "), scheduler)
	}
	s, _ := samplerNames()
	return "", fmt.Errorf("sampler %q is not available in Kiln; choose one of %s", sampler, strings.Join(s, ", "))
}

// input is one input of a node definition: its type (or choices) and
// options, as /object_info shows them.
type input struct {
	name string
	typ  any // "INT", "MODEL", or a []string of choices
	opts map[string]any
}

// nodeDef is a node class Kiln compiles.
type nodeDef struct {
	required, optional []input
	outputs, outNames  []string
	category, display  string
	output             bool // an output node (SaveImage, PreviewImage)
	description        string
}

// nodeDefs returns the supported node classes; models lists the
// checkpoint names offered by CheckpointLoaderSimple.
func nodeDefs(models []string) map[string]nodeDef {
	samplers, schedulers := samplerNames()
	seed := map[string]any{"default": 0, "min": 0, "max": uint64(1<<53 - 1), "control_after_generate": true}
	intIn := func(def, lo, hi, step int) map[string]any {
		return map[string]any{"default": def, "min": lo, "max": hi, "step": step}
	}
	if models == nil {
		models = []string{}
	}
	return map[string]nodeDef{
		"CheckpointLoaderSimple": {required: []input{{"ckpt_name", models, nil}},
			outputs: []string{"MODEL", "CLIP", "VAE"}, outNames: []string{"MODEL", "CLIP", "VAE"}, category: "loaders",
			display: "Load Checkpoint", description: "A servable Kiln model (GET /v1/models)."},
		"CLIPTextEncode": {required: []input{{"text", "STRING", map[string]any{"multiline": true, "dynamicPrompts": true}}, {"clip", "CLIP", nil}},
			outputs: []string{"CONDITIONING"}, outNames: []string{"CONDITIONING"}, category: "conditioning", display: "CLIP Text Encode (Prompt)"},
		"CLIPSetLastLayer": {required: []input{{"clip", "CLIP", nil}, {"stop_at_clip_layer", "INT", intIn(-1, -24, -1, 1)}},
			outputs: []string{"CLIP"}, outNames: []string{"CLIP"}, category: "conditioning", display: "CLIP Set Last Layer"},
		"LoraLoader": {required: []input{{"model", "MODEL", nil}, {"clip", "CLIP", nil}, {"lora_name", []string{}, nil},
			{"strength_model", "FLOAT", map[string]any{"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}},
			{"strength_clip", "FLOAT", map[string]any{"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}}},
			outputs: []string{"MODEL", "CLIP"}, outNames: []string{"MODEL", "CLIP"}, category: "loaders", display: "Load LoRA",
			description: "Accepted only with both strengths 0: Kiln cannot apply LoRA networks yet."},
		"EmptyLatentImage": {required: []input{{"width", "INT", intIn(512, 64, 4096, 8)}, {"height", "INT", intIn(512, 64, 4096, 8)},
			{"batch_size", "INT", intIn(1, 1, 64, 1)}},
			outputs: []string{"LATENT"}, outNames: []string{"LATENT"}, category: "latent", display: "Empty Latent Image"},
		"LatentUpscale": {required: []input{{"samples", "LATENT", nil}, {"upscale_method", []string{"nearest-exact", "bilinear", "area", "bicubic", "bislerp"}, nil},
			{"width", "INT", intIn(512, 0, 4096, 8)}, {"height", "INT", intIn(512, 0, 4096, 8)}, {"crop", []string{"disabled", "center"}, nil}},
			outputs: []string{"LATENT"}, outNames: []string{"LATENT"}, category: "latent", display: "Upscale Latent",
			description: "Accepted on an Empty Latent Image (it sets the size); Kiln has no second sampling pass yet."},
		"KSampler": {required: []input{{"model", "MODEL", nil}, {"seed", "INT", seed}, {"steps", "INT", intIn(20, 1, 10000, 1)},
			{"cfg", "FLOAT", map[string]any{"default": 8.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01}},
			{"sampler_name", samplers, nil}, {"scheduler", schedulers, nil}, {"positive", "CONDITIONING", nil},
			{"negative", "CONDITIONING", nil}, {"latent_image", "LATENT", nil},
			{"denoise", "FLOAT", map[string]any{"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}}},
			outputs: []string{"LATENT"}, outNames: []string{"LATENT"}, category: "sampling", display: "KSampler"},
		"KSamplerAdvanced": {required: []input{{"model", "MODEL", nil}, {"add_noise", []string{"enable", "disable"}, nil},
			{"noise_seed", "INT", seed}, {"steps", "INT", intIn(20, 1, 10000, 1)},
			{"cfg", "FLOAT", map[string]any{"default": 8.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01}},
			{"sampler_name", samplers, nil}, {"scheduler", schedulers, nil}, {"positive", "CONDITIONING", nil},
			{"negative", "CONDITIONING", nil}, {"latent_image", "LATENT", nil}, {"start_at_step", "INT", intIn(0, 0, 10000, 1)},
			{"end_at_step", "INT", intIn(10000, 0, 10000, 1)}, {"return_with_leftover_noise", []string{"disable", "enable"}, nil}},
			outputs: []string{"LATENT"}, outNames: []string{"LATENT"}, category: "sampling", display: "KSampler (Advanced)",
			description: "Runs whole sampling passes: add_noise enable, start_at_step 0 (or the img2img start), end_at_step ≥ steps, no leftover noise."},
		"VAEDecode": {required: []input{{"samples", "LATENT", nil}, {"vae", "VAE", nil}},
			outputs: []string{"IMAGE"}, outNames: []string{"IMAGE"}, category: "latent", display: "VAE Decode"},
		"VAEEncode": {required: []input{{"pixels", "IMAGE", nil}, {"vae", "VAE", nil}},
			outputs: []string{"LATENT"}, outNames: []string{"LATENT"}, category: "latent", display: "VAE Encode"},
		"LoadImage": {required: []input{{"image", []string{}, map[string]any{"image_upload": true}}},
			outputs: []string{"IMAGE", "MASK"}, outNames: []string{"IMAGE", "MASK"}, category: "image", display: "Load Image",
			description: "An image uploaded with POST /upload/image or one Kiln made (its /view filename)."},
		"ImageScale": {required: []input{{"image", "IMAGE", nil}, {"upscale_method", []string{"nearest-exact", "bilinear", "area", "bicubic", "lanczos"}, nil},
			{"width", "INT", intIn(512, 0, 4096, 1)}, {"height", "INT", intIn(512, 0, 4096, 1)}, {"crop", []string{"disabled", "center"}, nil}},
			outputs: []string{"IMAGE"}, outNames: []string{"IMAGE"}, category: "image/upscaling", display: "Upscale Image",
			description: "Accepted on a Load Image that feeds VAE Encode: it sets the img2img size."},
		"VAEEncodeForInpaint": {required: []input{{"pixels", "IMAGE", nil}, {"vae", "VAE", nil}, {"mask", "MASK", nil},
			{"grow_mask_by", "INT", intIn(6, 0, 64, 1)}},
			outputs: []string{"LATENT"}, outNames: []string{"LATENT"}, category: "latent/inpaint", display: "VAE Encode (for Inpainting)",
			description: "A Load Image's latent with its masked pixels gray and the mask (rounded, grown by grow_mask_by) as the noise mask: an inpainting job."},
		"SetLatentNoiseMask": {required: []input{{"samples", "LATENT", nil}, {"mask", "MASK", nil}},
			outputs: []string{"LATENT"}, outNames: []string{"LATENT"}, category: "latent/inpaint", display: "Set Latent Noise Mask",
			description: "On a VAE Encode latent: only the masked region is sampled (an inpainting job, the mask unblurred)."},
		"InpaintModelConditioning": {required: []input{{"positive", "CONDITIONING", nil}, {"negative", "CONDITIONING", nil},
			{"vae", "VAE", nil}, {"pixels", "IMAGE", nil}, {"mask", "MASK", nil}},
			optional: []input{{"noise_mask", "BOOLEAN", map[string]any{"default": true}}},
			outputs:  []string{"CONDITIONING", "CONDITIONING", "LATENT"}, outNames: []string{"positive", "negative", "latent"},
			category: "conditioning/inpaint", display: "InpaintModelConditioning",
			description: "An inpainting job: inpainting models get the mask and the masked image's latents as extra channels; other models sample only the masked region (whatever noise_mask says)."},
		"ImageToMask": {required: []input{{"image", "IMAGE", nil}, {"channel", []string{"red", "green", "blue", "alpha"}, nil}},
			outputs: []string{"MASK"}, outNames: []string{"MASK"}, category: "mask", display: "Convert Image to Mask",
			description: "A channel of a Load Image (its alpha is Load Image's MASK output) or of a Convert Mask to Image."},
		"MaskToImage": {required: []input{{"mask", "MASK", nil}},
			outputs: []string{"IMAGE"}, outNames: []string{"IMAGE"}, category: "mask", display: "Convert Mask to Image",
			description: "Accepted where its image becomes a mask again (Convert Image to Mask)."},
		"SolidMask": {required: []input{{"value", "FLOAT", map[string]any{"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}},
			{"width", "INT", intIn(512, 1, 4096, 1)}, {"height", "INT", intIn(512, 1, 4096, 1)}},
			outputs: []string{"MASK"}, outNames: []string{"MASK"}, category: "mask", display: "SolidMask"},
		"InvertMask": {required: []input{{"mask", "MASK", nil}},
			outputs: []string{"MASK"}, outNames: []string{"MASK"}, category: "mask", display: "InvertMask"},
		"SaveImage": {required: []input{{"images", "IMAGE", nil}}, optional: []input{{"filename_prefix", "STRING", map[string]any{"default": "ComfyUI"}}},
			category: "image", display: "Save Image", output: true},
		"PreviewImage": {required: []input{{"images", "IMAGE", nil}}, category: "image", display: "Preview Image", output: true},
	}
}

// objectInfo renders node definitions in /object_info's shape.
func objectInfo(defs map[string]nodeDef) map[string]any {
	out := map[string]any{}
	for name, d := range defs {
		req, opt := map[string]any{}, map[string]any{}
		var order []string
		for _, in := range d.required {
			req[in.name] = inputSpec(in)
			order = append(order, in.name)
		}
		var optOrder []string
		for _, in := range d.optional {
			opt[in.name] = inputSpec(in)
			optOrder = append(optOrder, in.name)
		}
		inputs := map[string]any{"required": req}
		if len(opt) > 0 {
			inputs["optional"] = opt
		}
		outs := d.outputs
		if outs == nil {
			outs = []string{}
		}
		isList := make([]bool, len(outs))
		names := d.outNames
		if names == nil {
			names = []string{}
		}
		out[name] = map[string]any{
			"input": inputs, "input_order": map[string]any{"required": order, "optional": optOrder},
			"output": outs, "output_is_list": isList, "output_name": names, "name": name, "display_name": d.display,
			"description": d.description, "python_module": "nodes", "category": d.category, "output_node": d.output,
		}
	}
	return out
}

func inputSpec(in input) []any {
	if in.opts != nil {
		return []any{in.typ, in.opts}
	}
	return []any{in.typ}
}
