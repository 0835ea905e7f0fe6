package comfyui

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"

	"github.com/kiln-project/kiln/gateway/validate"
)

// Node is one node of an API-format workflow.
type Node struct {
	ClassType string                     `json:"class_type"`
	Inputs    map[string]json.RawMessage `json:"inputs"`
	Meta      map[string]any             `json:"_meta,omitempty"`
}

// Graph is an API-format workflow: nodes by id.
type Graph map[string]Node

// NodeError is a problem with one node, in ComfyUI's node_errors shape.
type NodeError struct {
	Errors          []ErrorItem `json:"errors"`
	DependentOutput []string    `json:"dependent_outputs"`
	ClassType       string      `json:"class_type"`
}

// ErrorItem is one error of ComfyUI's error responses.
type ErrorItem struct {
	Type      string         `json:"type"`
	Message   string         `json:"message"`
	Details   string         `json:"details"`
	ExtraInfo map[string]any `json:"extra_info"`
}

// compileError is a graph that cannot run: the node and what is wrong.
type compileError struct {
	node, class, input, kind, msg string
}

func (e *compileError) Error() string {
	if e.input != "" {
		return fmt.Sprintf("node %s (%s), input %s: %s", e.node, e.class, e.input, e.msg)
	}
	return fmt.Sprintf("node %s (%s): %s", e.node, e.class, e.msg)
}

// plan is one native job a graph compiles to: the request, the output
// node that shows its images and the sampler node that makes them.
type plan struct {
	output, outputClass, sampler string
	req                          validate.JobRequest
	// initImage names the LoadImage file (img2img); the handler reads it.
	initImage string
	// inpaint is the plan's mask (nil: none), computed by the handler.
	inpaint *inpaintVal
}

// Values flowing along the graph's links.
type (
	modelVal struct{ name string }
	clipVal  struct {
		model    string
		clipSkip int
	}
	vaeVal  struct{ model string }
	condVal struct {
		text  string
		clip  clipVal
		node  string
		valid bool
	}
	imageVal struct {
		upload        string // LoadImage file
		width, height int    // ImageScale (0: the image's own)
		sampled       *samplerVal
		mask          *maskVal // MaskToImage
	}
	latentVal struct {
		width, height, n int
		init             *imageVal // VAEEncode
		sampled          *samplerVal
		inpaint          *inpaintVal
	}
	// inpaintVal is a latent's noise mask: which node set it and how.
	inpaintVal struct {
		node string
		mask maskVal
		// encode marks VAEEncodeForInpaint: the mask rounded and grown by
		// grow pixels, the masked pixels gray before encoding.
		encode bool
		grow   int
	}
	samplerVal struct {
		node    string
		model   string
		req     validate.JobRequest
		init    string
		inpaint *inpaintVal
	}
)

// compiler evaluates a graph's nodes on demand.
type compiler struct {
	g       Graph
	defs    map[string]nodeDef
	model   func(string) (string, error)
	memo    map[string][]any
	visit   map[string]bool
	outputs []string
}

// compile checks a graph and turns each output node into a job plan.
// model resolves a ckpt_name to a servable model.
func compile(g Graph, defs map[string]nodeDef, model func(string) (string, error)) ([]plan, *compileError) {
	c := &compiler{g: g, defs: defs, model: model, memo: map[string][]any{}, visit: map[string]bool{}}
	ids := make([]string, 0, len(g))
	for id := range g {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return nodeLess(ids[i], ids[j]) })
	// Every node must be one Kiln knows, with its required inputs.
	for _, id := range ids {
		n := g[id]
		d, ok := defs[n.ClassType]
		if !ok {
			if n.ClassType == "" {
				return nil, &compileError{node: id, kind: "invalid_prompt", msg: "the node has no class_type"}
			}
			return nil, &compileError{node: id, class: n.ClassType, kind: "invalid_prompt",
				msg: fmt.Sprintf("node type %s is not supported by Kiln (GET /object_info lists the supported nodes)", n.ClassType)}
		}
		for _, in := range d.required {
			if _, ok := n.Inputs[in.name]; !ok {
				return nil, &compileError{node: id, class: n.ClassType, input: in.name, kind: "required_input_missing", msg: "required input is missing"}
			}
		}
		if d.output {
			c.outputs = append(c.outputs, id)
		}
	}
	if len(c.outputs) == 0 {
		return nil, &compileError{kind: "prompt_no_outputs", msg: "the prompt has no output node (SaveImage or PreviewImage)"}
	}
	var plans []plan
	for _, id := range c.outputs {
		img, err := c.input(id, "images")
		if err != nil {
			return nil, err
		}
		iv, ok := img.(imageVal)
		if !ok || iv.sampled == nil {
			return nil, &compileError{node: id, class: g[id].ClassType, input: "images", kind: "invalid_input",
				msg: "Kiln saves images decoded (VAEDecode) from a KSampler's latent"}
		}
		plans = append(plans, plan{output: id, outputClass: g[id].ClassType, sampler: iv.sampled.node, req: iv.sampled.req,
			initImage: iv.sampled.init, inpaint: iv.sampled.inpaint})
	}
	return plans, nil
}

// nodeLess orders numeric ids numerically, others after them by text.
func nodeLess(a, b string) bool {
	x, errA := strconv.Atoi(a)
	y, errB := strconv.Atoi(b)
	switch {
	case errA == nil && errB == nil:
		return x < y
	case errA == nil:
		return true
	case errB == nil:
		return false
	}
	return a < b
}

// input evaluates a node's input: a link [id, slot] to another node's
// output.
func (c *compiler) input(id, name string) (any, *compileError) {
	n := c.g[id]
	raw := n.Inputs[name]
	var link []json.RawMessage
	if json.Unmarshal(raw, &link) != nil || len(link) != 2 {
		return nil, &compileError{node: id, class: n.ClassType, input: name, kind: "invalid_input", msg: "must be a link [node_id, output_index]"}
	}
	var from string
	if json.Unmarshal(link[0], &from) != nil {
		var num json.Number
		if json.Unmarshal(link[0], &num) != nil {
			return nil, &compileError{node: id, class: n.ClassType, input: name, kind: "invalid_input", msg: "the link's node id must be a string"}
		}
		from = num.String()
	}
	var slot int
	if json.Unmarshal(link[1], &slot) != nil || slot < 0 {
		return nil, &compileError{node: id, class: n.ClassType, input: name, kind: "invalid_input", msg: "the link's output index must be a non-negative integer"}
	}
	if _, ok := c.g[from]; !ok {
		return nil, &compileError{node: id, class: n.ClassType, input: name, kind: "invalid_input", msg: fmt.Sprintf("links to node %s, which is not in the prompt", from)}
	}
	outs, err := c.eval(from)
	if err != nil {
		return nil, err
	}
	if slot >= len(outs) {
		return nil, &compileError{node: id, class: n.ClassType, input: name, kind: "invalid_input",
			msg: fmt.Sprintf("node %s (%s) has no output %d", from, c.g[from].ClassType, slot)}
	}
	return outs[slot], nil
}

// literal decodes a widget value.
func (c *compiler) literal(id, name string, v any) *compileError {
	n := c.g[id]
	raw, ok := n.Inputs[name]
	if !ok {
		return nil // optional, left at its default
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return &compileError{node: id, class: n.ClassType, input: name, kind: "invalid_input_type", msg: fmt.Sprintf("invalid value %s: %v", raw, err)}
	}
	return nil
}

// field names a widget input and where to decode it.
type field struct {
	name string
	v    any
}

// literals decodes several widget values.
func (c *compiler) literals(id string, fields ...field) *compileError {
	for _, f := range fields {
		if err := c.literal(id, f.name, f.v); err != nil {
			return err
		}
	}
	return nil
}

// clipInput evaluates a node's "clip" input.
func (c *compiler) clipInput(id string) (clipVal, *compileError) {
	v, err := c.input(id, "clip")
	if err != nil {
		return clipVal{}, err
	}
	clip, ok := v.(clipVal)
	if !ok {
		return clipVal{}, c.fail(id, "clip", "must come from a CLIP output")
	}
	return clip, nil
}

func (c *compiler) fail(id, input, msg string, args ...any) *compileError {
	return &compileError{node: id, class: c.g[id].ClassType, input: input, kind: "value_not_valid", msg: fmt.Sprintf(msg, args...)}
}

// eval computes a node's outputs (memoised; cycles are errors).
func (c *compiler) eval(id string) ([]any, *compileError) {
	if out, ok := c.memo[id]; ok {
		return out, nil
	}
	if c.visit[id] {
		return nil, c.fail(id, "", "the prompt has a cycle through this node")
	}
	c.visit[id] = true
	out, err := c.evalNode(id)
	if err != nil {
		return nil, err
	}
	c.memo[id] = out
	return out, nil
}

func (c *compiler) evalNode(id string) ([]any, *compileError) {
	n := c.g[id]
	switch n.ClassType {
	case "CheckpointLoaderSimple":
		var name string
		if err := c.literal(id, "ckpt_name", &name); err != nil {
			return nil, err
		}
		m, err := c.model(name)
		if err != nil {
			return nil, c.fail(id, "ckpt_name", "%v", err)
		}
		return []any{modelVal{m}, clipVal{model: m}, vaeVal{m}}, nil
	case "CLIPSetLastLayer":
		clip, err := c.clipInput(id)
		if err != nil {
			return nil, err
		}
		var stop int
		if err := c.literal(id, "stop_at_clip_layer", &stop); err != nil {
			return nil, err
		}
		if stop > -1 || stop < -validate.MaxClipSkip {
			return nil, c.fail(id, "stop_at_clip_layer", "must be from -%d to -1, got %d", validate.MaxClipSkip, stop)
		}
		clip.clipSkip = -stop // ComfyUI's -2 is A1111's clip skip 2
		return []any{clip}, nil
	case "LoraLoader":
		mv, err := c.input(id, "model")
		if err != nil {
			return nil, err
		}
		cv, err := c.input(id, "clip")
		if err != nil {
			return nil, err
		}
		var sm, sc float64
		if err := c.literals(id, field{"strength_model", &sm}, field{"strength_clip", &sc}); err != nil {
			return nil, err
		}
		if sm != 0 || sc != 0 {
			return nil, c.fail(id, "lora_name", "Kiln cannot apply LoRA networks yet (only strengths 0 pass through)")
		}
		return []any{mv, cv}, nil
	case "CLIPTextEncode":
		clip, err := c.clipInput(id)
		if err != nil {
			return nil, err
		}
		var text string
		if err := c.literal(id, "text", &text); err != nil {
			return nil, err
		}
		return []any{condVal{text: text, clip: clip, node: id, valid: true}}, nil
	case "EmptyLatentImage":
		var w, h, n int
		if err := c.literals(id, field{"width", &w}, field{"height", &h}, field{"batch_size", &n}); err != nil {
			return nil, err
		}
		if n < 1 || n > 64 {
			return nil, c.fail(id, "batch_size", "must be from 1 to 64, got %d", n)
		}
		return []any{latentVal{width: w, height: h, n: n}}, nil
	case "LatentUpscale":
		v, err := c.input(id, "samples")
		if err != nil {
			return nil, err
		}
		lat, ok := v.(latentVal)
		if !ok || lat.sampled != nil || lat.init != nil {
			return nil, c.fail(id, "samples", "Kiln upscales only an Empty Latent Image (a second sampling pass is not available yet)")
		}
		if err := c.literals(id, field{"width", &lat.width}, field{"height", &lat.height}); err != nil {
			return nil, err
		}
		return []any{lat}, nil
	case "LoadImage":
		var name string
		if err := c.literal(id, "image", &name); err != nil {
			return nil, err
		}
		if name == "" {
			return nil, c.fail(id, "image", "names no image")
		}
		// MASK is 1 − alpha, as ComfyUI's LoadImage makes it.
		return []any{imageVal{upload: name}, maskVal{upload: name, channel: "alpha"}}, nil
	case "ImageScale":
		v, err := c.input(id, "image")
		if err != nil {
			return nil, err
		}
		img, ok := v.(imageVal)
		if !ok || img.upload == "" {
			return nil, c.fail(id, "image", "Kiln scales only a Load Image that feeds VAE Encode")
		}
		if err := c.literals(id, field{"width", &img.width}, field{"height", &img.height}); err != nil {
			return nil, err
		}
		return []any{img}, nil
	case "VAEEncode":
		v, err := c.input(id, "pixels")
		if err != nil {
			return nil, err
		}
		img, ok := v.(imageVal)
		if !ok || img.upload == "" {
			return nil, c.fail(id, "pixels", "Kiln encodes a Load Image (optionally scaled); re-encoding generated images is not available yet")
		}
		if _, err := c.input(id, "vae"); err != nil {
			return nil, err
		}
		return []any{latentVal{width: img.width, height: img.height, n: 1, init: &img}}, nil
	case "VAEEncodeForInpaint", "InpaintModelConditioning":
		return c.inpaintEncode(id)
	case "SetLatentNoiseMask":
		v, err := c.input(id, "samples")
		if err != nil {
			return nil, err
		}
		lat, ok := v.(latentVal)
		if !ok || lat.init == nil || lat.sampled != nil {
			return nil, c.fail(id, "samples", "Kiln sets a noise mask on a VAE Encode latent (of a Load Image)")
		}
		m, err := c.maskInput(id, "mask")
		if err != nil {
			return nil, err
		}
		lat.inpaint = &inpaintVal{node: id, mask: m}
		return []any{lat}, nil
	case "ImageToMask":
		v, err := c.input(id, "image")
		if err != nil {
			return nil, err
		}
		img, ok := v.(imageVal)
		var channel string
		if err := c.literal(id, "channel", &channel); err != nil {
			return nil, err
		}
		switch {
		case channel != "red" && channel != "green" && channel != "blue" && channel != "alpha":
			return nil, c.fail(id, "channel", "must be red, green, blue or alpha, got %q", channel)
		case ok && img.mask != nil:
			return []any{*img.mask}, nil // every channel of a MaskToImage is the mask
		case !ok || img.upload == "":
			return nil, c.fail(id, "image", "Kiln makes masks of a Load Image (or a Mask To Image)")
		case channel == "alpha":
			return nil, c.fail(id, "channel", "a Load Image's IMAGE has no alpha channel; use its MASK output")
		}
		return []any{maskVal{upload: img.upload, channel: channel}}, nil
	case "MaskToImage":
		m, err := c.maskInput(id, "mask")
		if err != nil {
			return nil, err
		}
		return []any{imageVal{mask: &m}}, nil
	case "InvertMask":
		m, err := c.maskInput(id, "mask")
		if err != nil {
			return nil, err
		}
		m.invert = !m.invert
		return []any{m}, nil
	case "SolidMask":
		m := maskVal{}
		if err := c.literals(id, field{"value", &m.solid}, field{"width", &m.width}, field{"height", &m.height}); err != nil {
			return nil, err
		}
		switch {
		case math.IsNaN(m.solid) || m.solid < 0 || m.solid > 1:
			return nil, c.fail(id, "value", "must be from 0 to 1")
		case m.width < 1 || m.width > validate.MaxSide:
			return nil, c.fail(id, "width", "must be from 1 to %d", validate.MaxSide)
		case m.height < 1 || m.height > validate.MaxSide:
			return nil, c.fail(id, "height", "must be from 1 to %d", validate.MaxSide)
		}
		return []any{m}, nil
	case "VAEDecode":
		v, err := c.input(id, "samples")
		if err != nil {
			return nil, err
		}
		lat, ok := v.(latentVal)
		if !ok || lat.sampled == nil {
			return nil, c.fail(id, "samples", "Kiln decodes the latent a KSampler made")
		}
		vae, err := c.input(id, "vae")
		if err != nil {
			return nil, err
		}
		if vv, ok := vae.(vaeVal); !ok || vv.model != lat.sampled.model {
			return nil, c.fail(id, "vae", "the VAE must come from the sampler's checkpoint (Kiln does not mix components of different models)")
		}
		return []any{imageVal{sampled: lat.sampled}}, nil
	case "KSampler", "KSamplerAdvanced":
		return c.sampler(id)
	case "SaveImage", "PreviewImage":
		return nil, nil
	}
	return nil, c.fail(id, "", "node type %s is not supported by Kiln", n.ClassType)
}

// sampler compiles KSampler and KSamplerAdvanced into a job request.
func (c *compiler) sampler(id string) ([]any, *compileError) {
	n := c.g[id]
	adv := n.ClassType == "KSamplerAdvanced"
	mv, err := c.input(id, "model")
	if err != nil {
		return nil, err
	}
	model, ok := mv.(modelVal)
	if !ok {
		return nil, c.fail(id, "model", "must come from a MODEL output")
	}
	var conds [2]condVal
	for i, name := range []string{"positive", "negative"} {
		v, err := c.input(id, name)
		if err != nil {
			return nil, err
		}
		cv, ok := v.(condVal)
		if !ok || !cv.valid {
			return nil, c.fail(id, name, "must come from a CLIPTextEncode")
		}
		if cv.clip.model != model.name {
			return nil, c.fail(id, name, "its CLIP comes from another checkpoint than the sampler's model (Kiln does not mix components)")
		}
		conds[i] = cv
	}
	if conds[0].clip.clipSkip != conds[1].clip.clipSkip {
		return nil, c.fail(id, "negative", "the two prompts use different CLIP Set Last Layer settings")
	}
	lv, err := c.input(id, "latent_image")
	if err != nil {
		return nil, err
	}
	lat, ok := lv.(latentVal)
	if !ok || lat.sampled != nil {
		return nil, c.fail(id, "latent_image", "must be an Empty Latent Image or a VAE Encode (a second pass over sampled latents is not available yet)")
	}
	var seed json.Number
	seedName := "seed"
	if adv {
		seedName = "noise_seed"
	}
	if err := c.literal(id, seedName, &seed); err != nil {
		return nil, err
	}
	s, perr := strconv.ParseUint(seed.String(), 10, 64)
	if perr != nil || s > validate.MaxSeed {
		return nil, c.fail(id, seedName, "must be an integer from 0 to %d", uint64(validate.MaxSeed))
	}
	var steps int
	var cfg float64
	var samplerName, scheduler string
	if err := c.literals(id, field{"steps", &steps}, field{"cfg", &cfg}, field{"sampler_name", &samplerName},
		field{"scheduler", &scheduler}); err != nil {
		return nil, err
	}
	kiln, kerr := kilnSampler(samplerName, scheduler)
	if kerr != nil {
		return nil, c.fail(id, "sampler_name", "%v", kerr)
	}
	denoise := 1.0
	if adv {
		var addNoise, leftover string
		start, end := 0, 10000
		if err := c.literals(id, field{"add_noise", &addNoise}, field{"return_with_leftover_noise", &leftover},
			field{"start_at_step", &start}, field{"end_at_step", &end}); err != nil {
			return nil, err
		}
		switch {
		case addNoise != "enable":
			return nil, c.fail(id, "add_noise", "Kiln runs sampling passes that start from noise (enable)")
		case leftover == "enable":
			return nil, c.fail(id, "return_with_leftover_noise", "Kiln runs whole sampling passes (disable)")
		case end < steps:
			return nil, c.fail(id, "end_at_step", "Kiln runs sampling to the end (end_at_step ≥ steps)")
		case start < 0 || start >= steps:
			return nil, c.fail(id, "start_at_step", "must be from 0 to steps-1")
		case start > 0 && lat.init == nil:
			return nil, c.fail(id, "start_at_step", "starting later than step 0 needs a VAE Encode latent (img2img)")
		}
		denoise = float64(steps-start) / float64(steps)
	} else if err := c.literal(id, "denoise", &denoise); err != nil {
		return nil, err
	}
	if math.IsNaN(denoise) || denoise <= 0 || denoise > 1 {
		return nil, c.fail(id, "denoise", "must be in (0, 1]")
	}
	if denoise < 1 && lat.init == nil {
		return nil, c.fail(id, "denoise", "denoise below 1 needs a VAE Encode latent (img2img); an Empty Latent Image starts from noise")
	}
	sv := &samplerVal{node: id, model: model.name}
	r := &sv.req
	r.Prompt, r.NegativePrompt, r.Model = conds[0].text, conds[1].text, model.name
	r.Seed, r.Steps, r.Guidance, r.Sampler = &s, &steps, &cfg, kiln
	nImages := lat.n
	r.N = &nImages
	// ComfyUI draws a batch's noise from one CPU generator seeded with
	// the seed; a Kiln job does the same with shared noise.
	r.SharedNoise = nImages > 1
	if cs := conds[0].clip.clipSkip; cs > 1 {
		r.ClipSkip = &cs
	}
	if lat.width > 0 && lat.height > 0 {
		w, h := lat.width, lat.height
		r.Width, r.Height = &w, &h
	}
	if lat.init != nil {
		sv.init = lat.init.upload
		r.Strength = &denoise
	}
	if lat.inpaint != nil {
		sv.inpaint = lat.inpaint
		blur := 0 // ComfyUI's noise masks are not blurred
		r.MaskBlur = &blur
	}
	return []any{latentVal{width: lat.width, height: lat.height, n: lat.n, sampled: sv}}, nil
}

// maskInput evaluates a node's MASK input.
func (c *compiler) maskInput(id, name string) (maskVal, *compileError) {
	v, err := c.input(id, name)
	if err != nil {
		return maskVal{}, err
	}
	m, ok := v.(maskVal)
	if !ok {
		return maskVal{}, c.fail(id, name, "must come from a MASK output")
	}
	return m, nil
}

// inpaintEncode compiles VAEEncodeForInpaint (a latent whose masked
// pixels were gray, with the mask grown as its noise mask) and
// InpaintModelConditioning (the prompts passed on, the image's latent with
// the mask as its noise mask; inpainting models take the mask and the
// masked image's latents as extra channels, which Kiln's pipeline adds for
// them).
func (c *compiler) inpaintEncode(id string) ([]any, *compileError) {
	v, err := c.input(id, "pixels")
	if err != nil {
		return nil, err
	}
	img, ok := v.(imageVal)
	if !ok || img.upload == "" {
		return nil, c.fail(id, "pixels", "Kiln inpaints a Load Image (optionally scaled)")
	}
	if _, err := c.input(id, "vae"); err != nil {
		return nil, err
	}
	m, err := c.maskInput(id, "mask")
	if err != nil {
		return nil, err
	}
	lat := latentVal{width: img.width, height: img.height, n: 1, init: &img, inpaint: &inpaintVal{node: id, mask: m}}
	if c.g[id].ClassType == "VAEEncodeForInpaint" {
		grow := 6
		if err := c.literal(id, "grow_mask_by", &grow); err != nil {
			return nil, err
		}
		if grow < 0 || grow > 64 {
			return nil, c.fail(id, "grow_mask_by", "must be from 0 to 64")
		}
		lat.inpaint.encode, lat.inpaint.grow = true, grow
		return []any{lat}, nil
	}
	noiseMask := true
	if err := c.literal(id, "noise_mask", &noiseMask); err != nil {
		return nil, err
	}
	var conds [2]condVal
	for i, name := range []string{"positive", "negative"} {
		v, err := c.input(id, name)
		if err != nil {
			return nil, err
		}
		cv, ok := v.(condVal)
		if !ok || !cv.valid {
			return nil, c.fail(id, name, "must come from a CLIPTextEncode")
		}
		conds[i] = cv
	}
	return []any{conds[0], conds[1], lat}, nil
}
