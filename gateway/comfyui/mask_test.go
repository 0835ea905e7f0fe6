package comfyui

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/gateway/live"
	"github.com/kiln-project/kiln/gateway/validate"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/events"
	"github.com/kiln-project/kiln/server/jobs"
)

// inpaintGraph loads image "a-0.png" and inpaints it through node 11 (%s
// fills in its class and inputs), the mask from node %s.
const inpaintGraph = `{
 "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
 "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
 "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
 "10": {"class_type": "LoadImage", "inputs": {"image": "a-0.png"}},
 "12": {"class_type": "InvertMask", "inputs": {"mask": ["10", 1]}},
 "13": {"class_type": "MaskToImage", "inputs": {"mask": ["12", 0]}},
 "14": {"class_type": "ImageToMask", "inputs": {"image": ["13", 0], "channel": "green"}},
 "15": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 8, "height": 8}},
 "11": %s,
 "8": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 3, "steps": 10, "cfg": 7, "sampler_name": "euler",
   "scheduler": "normal", "positive": %s, "negative": %s, "latent_image": %s, "denoise": 1.0}},
 "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
 "20": {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}}
}`

func inpaint(node, mask string) string {
	pos, neg, lat := `["4", 0]`, `["5", 0]`, `["11", 0]`
	switch node {
	case "VAEEncodeForInpaint":
		node = fmt.Sprintf(`{"class_type": "VAEEncodeForInpaint", "inputs": {"pixels": ["10", 0], "vae": ["1", 2], "mask": %s, "grow_mask_by": 2}}`, mask)
	case "SetLatentNoiseMask":
		node = fmt.Sprintf(`{"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["16", 0], "mask": %s}},
 "16": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["1", 2]}}`, mask)
	case "InpaintModelConditioning":
		node = fmt.Sprintf(`{"class_type": "InpaintModelConditioning", "inputs": {"positive": ["4", 0], "negative": ["5", 0], "vae": ["1", 2],
   "pixels": ["10", 0], "mask": %s, "noise_mask": true}}`, mask)
		pos, neg, lat = `["11", 0]`, `["11", 1]`, `["11", 2]`
	}
	return fmt.Sprintf(inpaintGraph, node, pos, neg, lat)
}

func TestCompileInpaintGraphs(t *testing.T) {
	defs := nodeDefs([]string{"sd15"})
	for _, c := range []struct {
		node, mask string
		want       maskVal
		encode     bool
	}{
		{"VAEEncodeForInpaint", `["10", 1]`, maskVal{upload: "a-0.png", channel: "alpha"}, true},
		{"SetLatentNoiseMask", `["12", 0]`, maskVal{upload: "a-0.png", channel: "alpha", invert: true}, false},
		{"InpaintModelConditioning", `["14", 0]`, maskVal{upload: "a-0.png", channel: "alpha", invert: true}, false},
		{"VAEEncodeForInpaint", `["15", 0]`, maskVal{solid: 1, width: 8, height: 8}, true},
	} {
		plans, err := compile(graph(t, inpaint(c.node, c.mask)), defs, resolve)
		if err != nil {
			t.Fatalf("%s: %v", c.node, err)
		}
		p := plans[0]
		if p.initImage != "a-0.png" || p.inpaint == nil || p.inpaint.node != "11" || p.inpaint.mask != c.want || p.inpaint.encode != c.encode {
			t.Fatalf("%s: plan %+v inpaint %+v", c.node, p, p.inpaint)
		}
		if c.encode && p.inpaint.grow != 2 {
			t.Fatalf("%s: grow %d", c.node, p.inpaint.grow)
		}
		if *p.req.Strength != 1 || *p.req.MaskBlur != 0 || p.req.Prompt != "a cat" {
			t.Fatalf("%s: request %+v", c.node, p.req)
		}
	}
	// Refusals name the node and input.
	for _, c := range []struct {
		graph, node, input string
	}{
		{inpaint("VAEEncodeForInpaint", `["10", 0]`), "11", "mask"},                                                              // an IMAGE as MASK
		{strings.Replace(inpaint("SetLatentNoiseMask", `["10", 1]`), `"samples": ["16", 0]`, `"samples": ["8", 0]`, 1), "8", ""}, // a cycle
		{strings.Replace(inpaint("VAEEncodeForInpaint", `["10", 1]`), `"grow_mask_by": 2`, `"grow_mask_by": 99`, 1), "11", "grow_mask_by"},
		{strings.Replace(inpaint("InpaintModelConditioning", `["14", 0]`), `"channel": "green"`, `"channel": "cyan"`, 1), "14", "channel"},
		{strings.Replace(inpaint("InpaintModelConditioning", `["14", 0]`), `["13", 0], "channel"`, `["10", 0], "channel"`, 1), "", ""},
		{strings.Replace(strings.Replace(inpaint("InpaintModelConditioning", `["14", 0]`), `["13", 0], "channel"`, `["10", 0], "channel"`, 1), `"green"`, `"alpha"`, 1), "14", "channel"},
		{strings.Replace(inpaint("VAEEncodeForInpaint", `["15", 0]`), `"value": 1.0`, `"value": 2`, 1), "15", "value"},
	} {
		_, err := compile(graph(t, c.graph), defs, resolve)
		if c.node == "" {
			if err != nil {
				t.Errorf("ImageToMask of a Load Image's green channel: %v", err)
			}
			continue
		}
		if err == nil || err.node != c.node || (c.input != "" && err.input != c.input) {
			t.Errorf("want an error at node %s input %q, got %v", c.node, c.input, err)
		}
	}
	// /object_info lists the nodes with ComfyUI's inputs.
	info := objectInfo(defs)
	for _, n := range []string{"VAEEncodeForInpaint", "SetLatentNoiseMask", "InpaintModelConditioning", "ImageToMask", "MaskToImage", "SolidMask", "InvertMask"} {
		if _, ok := info[n]; !ok {
			t.Errorf("/object_info lacks %s", n)
		}
	}
	if out := info["LoadImage"].(map[string]any)["output"].([]string); len(out) != 2 || out[1] != "MASK" {
		t.Errorf("LoadImage outputs %v", out)
	}
}

func TestGrowMaskMatchesComfyUI(t *testing.T) {
	// One pixel at (3, 2) of a 7×5 mask (0.6 rounds to 1), grown by 4:
	// padding ceil(3/2) = 2, so it spreads 2 left/up and 1 right/down.
	m := make([]float64, 7*5)
	m[2*7+3] = 0.6
	m[0] = 0.4 // rounds to 0
	g := growMask(m, 7, 5, 4)
	for y := 0; y < 5; y++ {
		for x := 0; x < 7; x++ {
			want := 0.0
			if x >= 2 && x <= 5 && y >= 1 && y <= 4 {
				want = 1
			}
			if g[y*7+x] != want {
				t.Fatalf("(%d,%d) = %g, want %g\n%v", x, y, g[y*7+x], want, g)
			}
		}
	}
	if g := growMask(m, 7, 5, 0); g[2*7+3] != 1 || g[0] != 0 || g[2*7+2] != 0 {
		t.Fatal("grow 0 only rounds")
	}
}

func TestResizeMask(t *testing.T) {
	// 2×1 → 4×1 bilinear, half-pixel centres (torch, align_corners=False)
	got := resizeMask([]float64{0, 1}, 2, 1, 4, 1)
	for i, want := range []float64{0, 0.25, 0.75, 1} {
		if d := got[i] - want; d > 1e-12 || d < -1e-12 {
			t.Fatalf("resize %v", got)
		}
	}
}

// imageBackend serves stored images to the handler.
type imageBackend struct{ images map[string][]byte }

func (b *imageBackend) Submit(context.Context, auth.Principal, *validate.JobRequest, string) (*jobs.Job, *apierr.Error) {
	return nil, apierr.Invalid("", "not in this test")
}
func (b *imageBackend) Wait(context.Context, string, string) (*jobs.Job, error) { return nil, nil }
func (b *imageBackend) Cancel(context.Context, string, string)                  {}
func (b *imageBackend) Image(_ context.Context, _, id string) ([]byte, error) {
	if d, ok := b.images[id]; ok {
		return d, nil
	}
	return nil, errors.New("not found")
}
func (b *imageBackend) PutImage(context.Context, string, string, []byte) error { return nil }
func (b *imageBackend) Models() ([]catalog.Model, string)                      { return nil, "" }
func (b *imageBackend) Subscribe(string, int) (<-chan live.Update, func())     { return nil, func() {} }
func (b *imageBackend) GPUs() []events.GPU                                     { return nil }

func encodePNG(t *testing.T, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func decodeB64PNG(t *testing.T, s string) image.Image {
	t.Helper()
	data, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestApplyInpaint(t *testing.T) {
	// 8×8 red image, its left half transparent
	src := image.NewNRGBA(image.Rect(0, 0, 8, 8))
	for y := 0; y < 8; y++ {
		for x := 0; x < 8; x++ {
			a := uint8(255)
			if x < 4 {
				a = 0
			}
			src.SetNRGBA(x, y, color.NRGBA{200, 10, 10, a})
		}
	}
	data := encodePNG(t, src)
	h := New(Options{Backend: &imageBackend{images: map[string][]byte{"a-0": data}}, MaxPixels: 1 << 16})
	defer h.Close()
	gray := func(m image.Image, x, y int) uint8 { return color.GrayModel.Convert(m.At(x, y)).(color.Gray).Y }

	// VAEEncodeForInpaint: the alpha mask grown by 2 (one pixel right),
	// the transparent half gray in the init image
	pl := &plan{initImage: "a-0.png", inpaint: &inpaintVal{node: "11", mask: maskVal{upload: "a-0.png", channel: "alpha"}, encode: true, grow: 2}}
	var jr validate.JobRequest
	if err := h.applyInpaint(context.Background(), "t", pl, &jr, data); err != nil {
		t.Fatal(err)
	}
	m := decodeB64PNG(t, jr.Mask)
	if gray(m, 0, 0) != 255 || gray(m, 4, 3) != 255 || gray(m, 5, 3) != 0 || gray(m, 7, 7) != 0 {
		t.Fatalf("grown mask %d %d %d %d", gray(m, 0, 0), gray(m, 4, 3), gray(m, 5, 3), gray(m, 7, 7))
	}
	init := decodeB64PNG(t, jr.InitImage)
	if c := color.NRGBAModel.Convert(init.At(1, 1)).(color.NRGBA); c != (color.NRGBA{128, 128, 128, 255}) {
		t.Fatalf("masked pixel %v, want gray", c)
	}
	if c := color.NRGBAModel.Convert(init.At(4, 1)).(color.NRGBA); c != (color.NRGBA{200, 10, 10, 255}) {
		t.Fatalf("unmasked pixel %v", c)
	}

	// SetLatentNoiseMask with an inverted SolidMask of 0.25 (a smaller
	// size, resized): a soft mask of 0.75 everywhere, the image unchanged
	pl = &plan{initImage: "a-0.png", inpaint: &inpaintVal{node: "11", mask: maskVal{solid: 0.25, width: 2, height: 2, invert: true}}}
	jr = validate.JobRequest{InitImage: "unchanged"}
	if err := h.applyInpaint(context.Background(), "t", pl, &jr, data); err != nil {
		t.Fatal(err)
	}
	if m := decodeB64PNG(t, jr.Mask); m.Bounds().Dx() != 8 || gray(m, 3, 5) != 191 || jr.InitImage != "unchanged" {
		t.Fatalf("soft mask %v %d, init %q", m.Bounds(), gray(m, 3, 5), jr.InitImage)
	}

	// a mask that repaints nothing, and a missing image, name the node
	for _, mv := range []maskVal{{solid: 0, width: 8, height: 8}, {upload: "a-0.png", channel: "red", invert: true},
		{upload: "b-0.png", channel: "alpha"}} {
		// red 200 inverted is 0.22 everywhere, which VAEEncodeForInpaint rounds to nothing
		pl = &plan{initImage: "a-0.png", inpaint: &inpaintVal{node: "11", mask: mv, encode: mv.channel == "red", grow: 6}}
		if err := h.applyInpaint(context.Background(), "t", pl, &validate.JobRequest{}, data); err == nil || err.node != "11" || err.input != "mask" {
			t.Fatalf("%+v: %v", pl.inpaint.mask, err)
		}
	}
}
