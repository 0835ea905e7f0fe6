package wasmhost

import (
	"bytes"
	"context"
	"reflect"
	"testing"

	nodes "github.com/kiln-project/kiln/nodes-wasm/builtin"
	"github.com/kiln-project/kiln/wasmhost/abi"
)

func gradient(w, h uint32) abi.Image {
	im := abi.Image{Width: w, Height: h, Pix: make([]byte, 4*w*h)}
	for y := uint32(0); y < h; y++ {
		for x := uint32(0); x < w; x++ {
			p := im.Pix[4*(y*w+x):]
			p[0], p[1], p[2], p[3] = byte(x*255/w), byte(y*255/h), byte((x+y)*7), 255
		}
	}
	return im
}

func clone(im abi.Image) abi.Image {
	im.Pix = append([]byte(nil), im.Pix...)
	return im
}

func params(kv ...string) []abi.Param {
	var ps []abi.Param
	for i := 0; i+1 < len(kv); i += 2 {
		ps = append(ps, abi.Param{Key: kv[i], Value: kv[i+1]})
	}
	return ps
}

func TestBuiltinNodesMatchNative(t *testing.T) {
	h := newTestHost(t, Config{})
	m := loadBuiltinNodes(t, h)
	ctx := context.Background()
	for _, c := range []struct {
		node   string
		params []abi.Param
	}{
		{"resize", params("width", "256", "height", "256")},
		{"resize", params("scale", "1.5", "filter", "nearest")},
		{"crop", params("aspect", "16:9")},
		{"crop", params("x", "5", "y", "7", "width", "100", "height", "50")},
		{"watermark", params("text", "Kiln test 123", "position", "top-left", "color", "#ff00ff80")},
		{"watermark", params()},
		{"grayscale", params("amount", "0.6")},
		{"resize", params("width", "0")}, // rejected with a reason
	} {
		src := gradient(320, 200)
		in := &abi.PostInput{Node: c.node, Params: c.params, Tenant: "t", Prompt: "p", Seed: 1, Image: clone(src)}
		got, o := m.CallNodePost(ctx, in)
		if !o.OK() {
			t.Fatalf("%s %v: %s %v", c.node, c.params, o.Result, o.Err)
		}
		native := nodes.Post(&abi.PostInput{Node: c.node, Params: c.params, Image: clone(src)})
		if got.Reject != native.Reject || got.Reason != native.Reason ||
			got.Image.Width != native.Image.Width || got.Image.Height != native.Image.Height || !bytes.Equal(got.Image.Pix, native.Image.Pix) {
			t.Fatalf("%s %v: wasm and native answers differ (reject %v/%v %q/%q, %d×%d vs %d×%d)", c.node, c.params,
				got.Reject, native.Reject, got.Reason, native.Reason, got.Image.Width, got.Image.Height, native.Image.Width, native.Image.Height)
		}
	}
	for _, c := range []struct {
		node   string
		prompt string
		params []abi.Param
	}{
		{"style", "a fox", params("preset", "watercolor")},
		{"style", "a fox", params("preset", "nope")},
		{"blocklist", "a fox in the snow", params("words", "snow,rain")},
		{"blocklist", "a fox", params("words", "snow,rain")},
		{"unknown", "a fox", nil},
	} {
		in := &abi.PreInput{Node: c.node, Params: c.params, Prompt: c.prompt, NegativePrompt: "n", Width: 512, Height: 512, Steps: 20, Guidance: 7, Sampler: "euler", Seed: 3}
		got, o := m.CallNodePre(ctx, in)
		if !o.OK() {
			t.Fatalf("%s: %s %v", c.node, o.Result, o.Err)
		}
		if want := nodes.Pre(in); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: wasm %+v, native %+v", c.node, got, want)
		}
	}
}

func TestNodeFallbacks(t *testing.T) {
	// The natives run built-in names natively and pass other names'
	// request or image through unchanged; a nil module answers with the
	// zero Natives, which build nothing in.
	n := testNatives()
	pre := n.Pre(&abi.PreInput{Node: "style", Params: params("text", "x"), Prompt: "a", Width: 8, Height: 8, Steps: 1})
	if pre.Prompt != "a, x" {
		t.Fatalf("native style: %+v", pre)
	}
	var m *Module
	pre, o := m.NodePre(context.Background(), &abi.PreInput{Node: "style", Params: params("text", "x"), Prompt: "a", Width: 8, Height: 8, Steps: 1})
	if o.Result != ResultNative || !o.Fallback || pre.Prompt != "a" {
		t.Fatalf("nil module, zero natives: %+v %v", pre, o)
	}
	for _, n := range []Natives{n, {}} {
		pre = n.Pre(&abi.PreInput{Node: "custom", Prompt: "a", Width: 8, Height: 8, Steps: 1})
		if pre.Reject || pre.Prompt != "a" || pre.Width != 8 {
			t.Fatalf("custom fallback: %+v", pre)
		}
		im := gradient(4, 4)
		post := n.Post(&abi.PostInput{Node: "custom", Image: im})
		if post.Reject || !bytes.Equal(post.Image.Pix, im.Pix) {
			t.Fatal("custom post fallback changed the image")
		}
	}
}
