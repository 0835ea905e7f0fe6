package lora

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/model/nn"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tensor"
)

func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// toyModel is one linear layer "blk.lin" (6←5) and one 3×3 convolution
// "blk.conv" (4←3) built from random weights.
type toyModel struct {
	ws   *nn.Weights
	lin  *nn.Linear
	conv *nn.Conv2D
}

func newToy(t testing.TB, be backend.Backend) *toyModel {
	ws := nn.NewWeights()
	m := &toyModel{ws: ws}
	blk := ws.Sub("blk")
	m.lin = nn.NewLinear(blk, "lin", 5, 6, true)
	m.conv = nn.NewConv2D(blk, "conv", 3, 4, 3, backend.SymmetricPad(1, 1))
	r := rand.New(rand.NewPCG(1, 2))
	var ts []safetensors.WriteTensor
	for _, w := range ws.List() {
		ts = append(ts, safetensors.F32Tensor(w.Name, w.Shape, randVec(r, w.Shape.Numel())))
	}
	src, err := safetensors.NewMemory(ts)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Load(be, src); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *toyModel) SetAdapter(name string, a nn.Adapter) bool { return m.ws.SetAdapter(name, a) }

func (m *toyModel) Modules() []nn.Module { return m.ws.Modules() }

func (m *toyModel) modules() Modules { return Modules{UNet: m.ws.Modules()} }

// kohyaFile builds a kohya-layout LoRA for the toy model with the given
// rank and alpha.
func kohyaFile(t testing.TB, seed uint64, rank int, alpha float32) safetensors.Source {
	r := rand.New(rand.NewPCG(seed, 7))
	src, err := safetensors.NewMemory([]safetensors.WriteTensor{
		safetensors.F16Tensor("lora_unet_blk_lin.lora_down.weight", []int{rank, 5}, randVec(r, rank*5)),
		safetensors.F16Tensor("lora_unet_blk_lin.lora_up.weight", []int{6, rank}, randVec(r, 6*rank)),
		safetensors.F32Tensor("lora_unet_blk_lin.alpha", nil, []float32{alpha}),
		safetensors.F32Tensor("lora_unet_blk_conv.lora_down.weight", []int{rank, 3, 3, 3}, randVec(r, rank*27)),
		safetensors.F32Tensor("lora_unet_blk_conv.lora_up.weight", []int{4, rank, 1, 1}, randVec(r, 4*rank)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func peftFile(t testing.TB, seed uint64, rank int) safetensors.Source {
	r := rand.New(rand.NewPCG(seed, 9))
	src, err := safetensors.NewMemory([]safetensors.WriteTensor{
		safetensors.F32Tensor("unet.blk.lin.lora_A.weight", []int{rank, 5}, randVec(r, rank*5)),
		safetensors.F32Tensor("unet.blk.lin.lora_B.weight", []int{6, rank}, randVec(r, 6*rank)),
		safetensors.F32Tensor("unet.blk.conv.lora_A.weight", []int{rank, 3, 3, 3}, randVec(r, rank*27)),
		safetensors.F32Tensor("unet.blk.conv.lora_B.weight", []int{4, rank, 1, 1}, randVec(r, 4*rank)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func maxDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// forward runs both layers on x rows and returns their outputs.
func (m *toyModel) forward(be backend.Backend, xl, xc []float32, rows int) (lin, conv []float32) {
	tl := be.FromFloat32(tensor.Shape{rows, 2, 5}, xl)
	tc := be.FromFloat32(tensor.Shape{rows, 3, 4, 4}, xc)
	return be.ToFloat32(m.lin.Forward(be, tl)), be.ToFloat32(m.conv.Forward(be, tc))
}

// dense computes the layers with merged weights W + s·Up·Down on the host.
func dense(t *testing.T, be backend.Backend, m *toyModel, uses []Use, xl, xc []float32) (lin, conv []float32) {
	t.Helper()
	W := be.ToFloat32(m.lin.W.T)
	b := be.ToFloat32(m.lin.B.T)
	C := be.ToFloat32(m.conv.W.T)
	for _, u := range uses {
		merge(u.LoRA, u.UNet, W, C)
	}
	for p := 0; p < 2; p++ {
		for o := 0; o < 6; o++ {
			s := b[o]
			for i := 0; i < 5; i++ {
				s += W[o*5+i] * xl[p*5+i]
			}
			lin = append(lin, s)
		}
	}
	cw := be.Upload(tensor.Shape{4, 3, 3, 3}, tensor.F32, f32Bytes(C))
	out := be.Conv2D(be.FromFloat32(tensor.Shape{1, 3, 4, 4}, xc), cw, m.conv.B.T, backend.SymmetricPad(1, 1))
	return lin, be.ToFloat32(out)
}

// merge adds w·Scale·Up·Down of l's factors to the toy weights W and C.
func merge(l *LoRA, w float32, W, C []float32) {
	for _, f := range l.Factors[UNet] {
		if f.Module != "blk.lin" {
			continue
		}
		for o := 0; o < 6; o++ {
			for i := 0; i < 5; i++ {
				var s float32
				for k := 0; k < f.Rank; k++ {
					s += f.Up[o*f.Rank+k] * f.Down[k*5+i]
				}
				W[o*5+i] += w * f.Scale * s
			}
		}
	}
	for _, f := range l.Factors[UNet] {
		if f.Module != "blk.conv" {
			continue
		}
		for o := 0; o < 4; o++ {
			for j := 0; j < 27; j++ {
				var s float32
				for k := 0; k < f.Rank; k++ {
					s += f.Up[o*f.Rank+k] * f.Down[k*27+j]
				}
				C[o*27+j] += w * f.Scale * s
			}
		}
	}
}

func TestParseLayouts(t *testing.T) {
	be := cpu.New()
	m := newToy(t, be)
	k, err := Parse(kohyaFile(t, 1, 2, 1), m.modules())
	if err != nil {
		t.Fatal(err)
	}
	if k.Count() != 2 || k.HasTextEncoder() {
		t.Fatalf("kohya: %d factors, text %v", k.Count(), k.HasTextEncoder())
	}
	for _, f := range k.Factors[UNet] {
		if f.Module == "blk.lin" && f.Scale != 0.5 {
			t.Errorf("alpha 1 at rank 2: scale %v, want 0.5", f.Scale)
		}
		if f.Module == "blk.conv" && (f.Scale != 1 || !f.Conv()) {
			t.Errorf("conv without alpha: scale %v conv %v", f.Scale, f.Conv())
		}
	}
	p, err := Parse(peftFile(t, 2, 3), m.modules())
	if err != nil {
		t.Fatal(err)
	}
	if p.Count() != 2 || p.Factors[UNet][0].Rank != 3 {
		t.Fatalf("peft: %+v", p.Factors)
	}
}

func TestParseRefusals(t *testing.T) {
	be := cpu.New()
	m := newToy(t, be)
	cases := []struct {
		name string
		ts   []safetensors.WriteTensor
		want string
	}{
		{"unknown module", []safetensors.WriteTensor{safetensors.F32Tensor("lora_unet_blk_nope.lora_down.weight", []int{1, 5}, make([]float32, 5))}, `"lora_unet_blk_nope.lora_down.weight" matches no UNet module`},
		{"not lora", []safetensors.WriteTensor{safetensors.F32Tensor("model.diffusion_model.x.weight", []int{1}, make([]float32, 1))}, "is not a LoRA tensor"},
		{"bad down shape", []safetensors.WriteTensor{
			safetensors.F32Tensor("unet.blk.lin.lora_A.weight", []int{2, 4}, make([]float32, 8)),
			safetensors.F32Tensor("unet.blk.lin.lora_B.weight", []int{6, 2}, make([]float32, 12)),
		}, `"unet.blk.lin.lora_A.weight" has shape [2 4]`},
		{"bad up shape", []safetensors.WriteTensor{
			safetensors.F32Tensor("unet.blk.lin.lora_A.weight", []int{2, 5}, make([]float32, 10)),
			safetensors.F32Tensor("unet.blk.lin.lora_B.weight", []int{6, 3}, make([]float32, 18)),
		}, `"unet.blk.lin.lora_B.weight" has shape [6 3]`},
		{"conv kernel", []safetensors.WriteTensor{
			safetensors.F32Tensor("lora_unet_blk_conv.lora_down.weight", []int{2, 3, 1, 1}, make([]float32, 6)),
			safetensors.F32Tensor("lora_unet_blk_conv.lora_up.weight", []int{4, 2, 1, 1}, make([]float32, 8)),
		}, `"lora_unet_blk_conv.lora_down.weight" has shape [2 3 1 1]`},
		{"missing up", []safetensors.WriteTensor{safetensors.F32Tensor("lora_unet_blk_lin.lora_down.weight", []int{2, 5}, make([]float32, 10))}, "no matching up"},
		{"loha", []safetensors.WriteTensor{safetensors.F32Tensor("lora_unet_blk_lin.hada_w1_a", []int{2, 5}, make([]float32, 10))}, "LyCORIS variant"},
		{"dora on the input side", []safetensors.WriteTensor{
			safetensors.F32Tensor("lora_unet_blk_lin.lora_down.weight", []int{2, 5}, make([]float32, 10)),
			safetensors.F32Tensor("lora_unet_blk_lin.lora_up.weight", []int{6, 2}, make([]float32, 12)),
			safetensors.F32Tensor("lora_unet_blk_lin.dora_scale", []int{1, 5}, make([]float32, 5)),
		}, `"lora_unet_blk_lin.dora_scale" has shape [1 5]`},
		{"dora conv", []safetensors.WriteTensor{
			safetensors.F32Tensor("lora_unet_blk_conv.lora_down.weight", []int{2, 3, 3, 3}, make([]float32, 54)),
			safetensors.F32Tensor("lora_unet_blk_conv.lora_up.weight", []int{4, 2, 1, 1}, make([]float32, 8)),
			safetensors.F32Tensor("lora_unet_blk_conv.dora_scale", []int{4, 1, 1, 1}, make([]float32, 4)),
		}, "DoRA on convolutions"},
	}
	for _, c := range cases {
		src, err := safetensors.NewMemory(c.ts)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Parse(src, m.modules())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", c.name, err, c.want)
		}
	}
}

// TestMixedRows checks the per-row update: rows with LoRA A, LoRA B and
// none in one batch equal each row run alone, and each equals the layer
// with merged weights.
func TestMixedRows(t *testing.T) {
	be := cpu.New()
	m := newToy(t, be)
	a, err := Parse(kohyaFile(t, 3, 2, 1), m.modules())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse(peftFile(t, 4, 3), m.modules())
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 5))
	xl, xc := randVec(r, 3*2*5), randVec(r, 3*3*16)
	uses := [][]Use{{{Name: "a", LoRA: a, UNet: 0.5}}, {{Name: "b", LoRA: b, UNet: 1}, {Name: "a", LoRA: a, UNet: -0.25}}, nil}
	var rows []Rows
	for i, u := range uses {
		rows = append(rows, Rows{From: i, To: i + 1, Uses: u})
	}
	remove, err := Install(m, UNet, rows, false)
	if err != nil {
		t.Fatal(err)
	}
	gl, gc := m.forward(be, xl, xc, 3)
	remove()
	// the host reference, the masked path (rows too large to gather) and
	// the gather path agree with the row-range ops the CPU takes
	for _, proto := range []rowAdapter{{reference: true}, {maxMix: 4, noRanges: true}, {noRanges: true}} {
		remove, err = install(m, UNet, rows, false, proto)
		if err != nil {
			t.Fatal(err)
		}
		hl, hc := m.forward(be, xl, xc, 3)
		remove()
		if d := max(maxDiff(gl, hl), maxDiff(gc, hc)); d > 1e-5 {
			t.Errorf("%+v: rows differ from the row-range ops by %g", proto, d)
		}
	}
	for i, u := range uses {
		rm, err := Install(m, UNet, []Rows{{From: 0, To: 1, Uses: u}}, false)
		if err != nil {
			t.Fatal(err)
		}
		ol, oc := m.forward(be, xl[i*10:(i+1)*10], xc[i*48:(i+1)*48], 1)
		rm()
		if d := maxDiff(gl[i*12:(i+1)*12], ol); d > 1e-5 {
			t.Errorf("row %d linear: mixed batch differs from alone by %g", i, d)
		}
		if d := maxDiff(gc[i*64:(i+1)*64], oc); d > 1e-5 {
			t.Errorf("row %d conv: mixed batch differs from alone by %g", i, d)
		}
		dl, dc := dense(t, be, m, u, xl[i*10:(i+1)*10], xc[i*48:(i+1)*48])
		if d := maxDiff(ol, dl); d > 1e-4 {
			t.Errorf("row %d linear: differs from merged weights by %g", i, d)
		}
		if d := maxDiff(oc, dc); d > 1e-4 {
			t.Errorf("row %d conv: differs from merged weights by %g", i, d)
		}
	}
	// with the adapters removed the layers are the base again
	bl, _ := m.forward(be, xl, xc, 3)
	if d := maxDiff(bl[24:], gl[24:]); d != 0 {
		t.Errorf("row without LoRA differs from the base by %g", d)
	}
	if d := maxDiff(bl[:12], gl[:12]); d == 0 {
		t.Error("LoRA A changed nothing")
	}
}

func TestParseEmbedding(t *testing.T) {
	mk := func(ts ...safetensors.WriteTensor) safetensors.Source {
		src, err := safetensors.NewMemory(ts)
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	sd := map[string]int{TextEncoder: 4}
	xl := map[string]int{TextEncoder: 4, TextEncoder2: 6}
	e, err := ParseEmbedding(mk(safetensors.F16Tensor("emb_params", []int{2, 4}, make([]float32, 8))), "style", sd)
	if err != nil || e.N != 2 || len(e.Vectors[TextEncoder]) != 8 {
		t.Fatalf("emb_params: %+v, %v", e, err)
	}
	if e, err = ParseEmbedding(mk(safetensors.F32Tensor("<tok>", []int{4}, make([]float32, 4))), "tok", sd); err != nil || e.N != 1 {
		t.Fatalf("diffusers token: %+v, %v", e, err)
	}
	if e, err = ParseEmbedding(mk(safetensors.F32Tensor("clip_l", []int{3, 4}, make([]float32, 12)), safetensors.F32Tensor("clip_g", []int{3, 6}, make([]float32, 18))), "x", xl); err != nil || e.N != 3 {
		t.Fatalf("sdxl: %+v, %v", e, err)
	}
	bad := []struct {
		src  safetensors.Source
		dims map[string]int
		want string
	}{
		{mk(safetensors.F32Tensor("emb_params", []int{2, 5}, make([]float32, 10))), sd, `key "emb_params" has shape [2 5]`},
		{mk(safetensors.F32Tensor("emb_params", []int{2, 4}, make([]float32, 8))), xl, "does not fit a model with two text encoders"},
		{mk(safetensors.F32Tensor("clip_l", []int{3, 4}, make([]float32, 12)), safetensors.F32Tensor("clip_g", []int{2, 6}, make([]float32, 12))), xl, "3"},
		{mk(safetensors.F32Tensor("clip_l", []int{3, 4}, make([]float32, 12))), xl, "no vectors for the model's second text encoder"},
		{mk(safetensors.F32Tensor("a", []int{4}, make([]float32, 4)), safetensors.F32Tensor("b", []int{4}, make([]float32, 4))), sd, "match no known layout"},
	}
	for i, c := range bad {
		if _, err := ParseEmbedding(c.src, "e", c.dims); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("case %d: err %v, want %q", i, err, c.want)
		}
	}
	if err := CheckFileName("/x/style.pt"); err == nil || !strings.Contains(err.Error(), "convert it to .safetensors") {
		t.Errorf(".pt: %v", err)
	}
	if err := CheckFileName("/x/style.safetensors"); err != nil {
		t.Error(err)
	}
}

func (m *toyModel) Weight(name string) *tensor.Tensor { return m.ws.Tensor(name + ".weight") }

func (m *toyModel) SetWeight(name string, t *tensor.Tensor) bool {
	return m.ws.SetTensor(name+".weight", t)
}

// TestMerge checks merged weights against the unmerged update, the
// convolution factors handed back, and the weights restored after.
func TestMerge(t *testing.T) {
	be := cpu.New()
	m := newToy(t, be)
	a, err := Parse(kohyaFile(t, 3, 2, 1), m.modules())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse(peftFile(t, 4, 3), m.modules())
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(6, 6))
	xl, xc := randVec(r, 2*2*5), randVec(r, 2*3*16)
	uses := []Use{{Name: "a", LoRA: a, UNet: 0.5}, {Name: "b", LoRA: b, UNet: -1}}
	base, _ := m.forward(be, xl, xc, 2)
	remove, err := Install(m, UNet, []Rows{{From: 0, To: 2, Uses: uses}}, false)
	if err != nil {
		t.Fatal(err)
	}
	wl, wc := m.forward(be, xl, xc, 2)
	remove()
	restore, rest, err := Merge(be, m, UNet, uses, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 2 || rest[0].LoRA.Count() != 1 || rest[0].UNet != 0.5 {
		t.Fatalf("conv factors handed back: %+v", rest)
	}
	remove, err = Install(m, UNet, []Rows{{From: 0, To: 2, Uses: rest}}, false)
	if err != nil {
		t.Fatal(err)
	}
	gl, gc := m.forward(be, xl, xc, 2)
	remove()
	restore()
	if d := max(maxDiff(gl, wl), maxDiff(gc, wc)); d > 1e-5 {
		t.Errorf("merged differs from unmerged by %g", d)
	}
	if d := maxDiff(gl, base); d < 1e-3 {
		t.Errorf("merging changed nothing (%g)", d)
	}
	if bl, _ := m.forward(be, xl, xc, 2); maxDiff(bl, base) != 0 {
		t.Error("restore did not put the weights back")
	}
}
