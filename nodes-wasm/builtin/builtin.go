// Package builtin holds Kiln's built-in pre- and post-processing nodes as
// plain Go over the ABI's messages and the node SDK's image operations.
// The same code runs natively (the host's fallback, and the reference a
// test compares with) and compiled to wasip1 in nodes-wasm/guest, the
// module that runs by default.
//
// Pre-processing nodes:
//
//	style      appends a preset's text (and negative text) to the prompt;
//	           params: preset (cinematic, photo, anime, watercolor,
//	           pixel-art, line-art), text, negative
//	blocklist  rejects prompts containing a blocked term; params: words
//	           (comma-separated terms, matched case-insensitively on word
//	           boundaries, multi-word terms allowed)
//
// Post-processing nodes:
//
//	resize     params: width, height (one may be left out to keep the
//	           aspect ratio) or scale; filter (linear, nearest)
//	crop       params: x, y, width, height, or aspect (W:H, centred)
//	watermark  params: text (default "kiln"), position (bottom-right,
//	           bottom-left, top-right, top-left, center), scale, color and
//	           background (#RRGGBB or #RRGGBBAA), margin
//	grayscale  params: amount (0..1, default 1)
//
// A node given bad parameters rejects with a reason naming the parameter.
package builtin

import (
	"errors"
	"strconv"
	"strings"

	"github.com/kiln-project/kiln/nodes-wasm/sdk"
	"github.com/kiln-project/kiln/wasmhost/abi"
)

// MaxOutputPixels bounds the images the post nodes produce (4096×4096).
const MaxOutputPixels = 16 << 20

// Names lists the built-in nodes.
func Names() []string {
	return []string{"style", "blocklist", "resize", "crop", "watermark", "grayscale"}
}

// Hook returns the hook a built-in node implements.
func Hook(name string) (abi.Hook, bool) {
	switch name {
	case "style", "blocklist":
		return abi.HookNodePre, true
	case "resize", "crop", "watermark", "grayscale":
		return abi.HookNodePost, true
	}
	return "", false
}

// CheckParams reports bad parameters for a built-in node without running
// it (post nodes are checked against a nominal 512×512 image only for the
// parameters' own syntax and ranges).
func CheckParams(name string, ps []abi.Param) error {
	h, ok := Hook(name)
	if !ok {
		return errors.New("unknown built-in node " + strconv.Quote(name))
	}
	if h == abi.HookNodePre {
		in := abi.PreInput{Node: name, Params: ps, Prompt: "x", Width: 512, Height: 512, Steps: 1}
		out := Pre(&in)
		if out.Reject && strings.HasPrefix(out.Reason, name+": parameter") {
			return errors.New(out.Reason)
		}
		return nil
	}
	im, _ := sdk.NewImage(512, 512)
	in := abi.PostInput{Node: name, Params: ps, Image: im}
	if out := Post(&in); out.Reject && strings.HasPrefix(out.Reason, name+": parameter") {
		return errors.New(out.Reason)
	}
	return nil
}

// Pre runs the built-in pre-processing node in.Node.
func Pre(in *abi.PreInput) abi.PreOutput {
	out := abi.PreOutput{
		Prompt: in.Prompt, NegativePrompt: in.NegativePrompt,
		Width: in.Width, Height: in.Height, Steps: in.Steps,
		Guidance: in.Guidance, Sampler: in.Sampler, Seed: in.Seed,
	}
	var err error
	switch in.Node {
	case "style":
		err = style(in, &out)
	case "blocklist":
		err = blocklist(in, &out)
	default:
		err = errors.New(in.Node + ": not a built-in pre-processing node")
	}
	if err != nil {
		return abi.PreOutput{Reject: true, Reason: err.Error()}
	}
	return out
}

// Post runs the built-in post-processing node in.Node. It may change
// in.Image's pixels in place.
func Post(in *abi.PostInput) abi.PostOutput {
	var im abi.Image
	var err error
	switch in.Node {
	case "resize":
		im, err = resize(in)
	case "crop":
		im, err = crop(in)
	case "watermark":
		im, err = watermark(in)
	case "grayscale":
		im, err = grayscale(in)
	default:
		err = errors.New(in.Node + ": not a built-in post-processing node")
	}
	if err != nil {
		return abi.PostOutput{Reject: true, Reason: err.Error()}
	}
	return abi.PostOutput{Image: im}
}

// paramErr names a bad parameter; CheckParams recognises the prefix.
func paramErr(node, key, why string) error {
	return errors.New(node + ": parameter " + key + ": " + why)
}

func paramUint(ps []abi.Param, node, key string, def, lo, hi uint64) (uint64, error) {
	v, ok := abi.ParamValue(ps, key)
	if !ok || v == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
	if err != nil || n < lo || n > hi {
		return 0, paramErr(node, key, "want an integer in "+strconv.FormatUint(lo, 10)+".."+strconv.FormatUint(hi, 10)+", got "+strconv.Quote(v))
	}
	return n, nil
}

func paramFloat(ps []abi.Param, node, key string, def, lo, hi float64) (float64, error) {
	v, ok := abi.ParamValue(ps, key)
	if !ok || v == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || !(f >= lo && f <= hi) {
		return 0, paramErr(node, key, "want a number in "+strconv.FormatFloat(lo, 'g', -1, 64)+".."+strconv.FormatFloat(hi, 'g', -1, 64)+", got "+strconv.Quote(v))
	}
	return f, nil
}

// paramColor parses #RRGGBB or #RRGGBBAA.
func paramColor(ps []abi.Param, node, key string, def sdk.Color) (sdk.Color, error) {
	v, ok := abi.ParamValue(ps, key)
	if !ok || v == "" {
		return def, nil
	}
	s := strings.TrimPrefix(strings.TrimSpace(v), "#")
	if len(s) != 6 && len(s) != 8 {
		return 0, paramErr(node, key, "want #RRGGBB or #RRGGBBAA, got "+strconv.Quote(v))
	}
	n, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return 0, paramErr(node, key, "want #RRGGBB or #RRGGBBAA, got "+strconv.Quote(v))
	}
	if len(s) == 6 {
		n = n<<8 | 0xff
	}
	return sdk.Color(n), nil
}
