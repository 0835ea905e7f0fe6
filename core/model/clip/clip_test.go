package clip

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// loadFixtureModel builds the sd15-tiny text encoder on the CPU backend.
func loadFixtureModel(t testing.TB) *Model {
	t.Helper()
	dir := fixtures.Require(t, "sd15-tiny/model/text_encoder")
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m, err := New(cpu.New(), cfg, f)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// reference opens reference.safetensors.
func reference(t testing.TB) *safetensors.File {
	t.Helper()
	f, err := safetensors.Open(fixtures.Require(t, "sd15-tiny/reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func referenceIDs(t testing.TB, ref safetensors.Source) ([]int32, int) {
	t.Helper()
	ids64, shape, err := safetensors.Int64(ref, "tok/input_ids")
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int32, len(ids64))
	for i, v := range ids64 {
		ids[i] = int32(v)
	}
	return ids, shape[0]
}

func referenceF32(t testing.TB, ref safetensors.Source, name string) []float32 {
	t.Helper()
	v, _, err := safetensors.Float32(ref, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestFixtureParity(t *testing.T) {
	m := loadFixtureModel(t)
	ref := reference(t)
	ids, batch := referenceIDs(t, ref)
	ctx := context.Background()

	hidden, pooled, err := m.Encode(ctx, ids, batch, 0)
	if err != nil {
		t.Fatal(err)
	}
	if e := fixtures.RelErr(hidden, referenceF32(t, ref, "te/last_hidden_state")); e > 1e-4 {
		t.Errorf("last_hidden_state: relative error %.3g", e)
	} else {
		t.Logf("last_hidden_state: relative error %.3g", e)
	}
	if e := fixtures.RelErr(pooled, referenceF32(t, ref, "te/pooled")); e > 1e-4 {
		t.Errorf("pooled: relative error %.3g", e)
	} else {
		t.Logf("pooled: relative error %.3g", e)
	}
	skip2, pooled2, err := m.Encode(ctx, ids, batch, 2)
	if err != nil {
		t.Fatal(err)
	}
	if e := fixtures.RelErr(skip2, referenceF32(t, ref, "te/clip_skip2")); e > 1e-4 {
		t.Errorf("clip_skip2: relative error %.3g", e)
	} else {
		t.Logf("clip_skip2: relative error %.3g", e)
	}
	if e := fixtures.RelErr(pooled2, pooled); e != 0 {
		t.Errorf("pooled output changed with clip skip (%.3g); it must come from the last layer", e)
	}
	// clip skip 1 is the last layer, like 0.
	skip1, _, err := m.Encode(ctx, ids, batch, 1)
	if err != nil {
		t.Fatal(err)
	}
	if e := fixtures.RelErr(skip1, hidden); e != 0 {
		t.Errorf("clip skip 1 differs from 0 by %.3g", e)
	}
	// One sequence alone gives the same rows as in the batch.
	one, _, err := m.Encode(ctx, ids[77*3:77*4], 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if e := fixtures.RelErr(one, hidden[77*3*32:77*4*32]); e > 1e-6 {
		t.Errorf("batch of one differs from batch row: %.3g", e)
	}
}

// naive is an independent float64 implementation of the CLIP text model
// used to check the configurations the fixture does not cover (gelu, the
// legacy argmax pooling, a sequence shorter than 77).
type naive struct {
	cfg Config
	w   map[string][]float64
}

func (n naive) layerNorm(x []float64, name string) []float64 {
	d := n.cfg.HiddenSize
	out := make([]float64, len(x))
	for r := 0; r < len(x)/d; r++ {
		row := x[r*d : (r+1)*d]
		var mean, v float64
		for _, a := range row {
			mean += a
		}
		mean /= float64(d)
		for _, a := range row {
			v += (a - mean) * (a - mean)
		}
		v /= float64(d)
		for i, a := range row {
			out[r*d+i] = (a-mean)/math.Sqrt(v+n.cfg.LayerNormEps)*n.w[name+".weight"][i] + n.w[name+".bias"][i]
		}
	}
	return out
}

func (n naive) linear(x []float64, name string, in, out int) []float64 {
	w, b := n.w[name+".weight"], n.w[name+".bias"]
	rows := len(x) / in
	y := make([]float64, rows*out)
	for r := 0; r < rows; r++ {
		for o := 0; o < out; o++ {
			s := b[o]
			for i := 0; i < in; i++ {
				s += x[r*in+i] * w[o*in+i]
			}
			y[r*out+o] = s
		}
	}
	return y
}

// run returns hidden_states (embeddings, then each layer) for one sequence.
func (n naive) run(ids []int32) [][]float64 {
	c := n.cfg
	d, L := c.HiddenSize, len(ids)
	x := make([]float64, L*d)
	for i, id := range ids {
		for j := 0; j < d; j++ {
			x[i*d+j] = n.w["embeddings.token_embedding.weight"][int(id)*d+j] + n.w["embeddings.position_embedding.weight"][i*d+j]
		}
	}
	states := [][]float64{x}
	hd := c.HeadDim()
	for l := 0; l < c.NumHiddenLayers; l++ {
		p := "encoder.layers." + strconv.Itoa(l) + "."
		h := n.layerNorm(x, p+"layer_norm1")
		q := n.linear(h, p+"self_attn.q_proj", d, d)
		k := n.linear(h, p+"self_attn.k_proj", d, d)
		v := n.linear(h, p+"self_attn.v_proj", d, d)
		a := make([]float64, L*d)
		for head := 0; head < c.NumAttentionHeads; head++ {
			for i := 0; i < L; i++ {
				sc := make([]float64, i+1)
				mx := math.Inf(-1)
				for j := 0; j <= i; j++ {
					var s float64
					for t := 0; t < hd; t++ {
						s += q[i*d+head*hd+t] * k[j*d+head*hd+t]
					}
					sc[j] = s / math.Sqrt(float64(hd))
					mx = math.Max(mx, sc[j])
				}
				var sum float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				for j := range sc {
					for t := 0; t < hd; t++ {
						a[i*d+head*hd+t] += sc[j] / sum * v[j*d+head*hd+t]
					}
				}
			}
		}
		o := n.linear(a, p+"self_attn.out_proj", d, d)
		x1 := make([]float64, len(x))
		for i := range x {
			x1[i] = x[i] + o[i]
		}
		h = n.layerNorm(x1, p+"layer_norm2")
		f := n.linear(h, p+"mlp.fc1", d, c.IntermediateSize)
		for i, z := range f {
			if c.HiddenAct == "gelu" {
				f[i] = 0.5 * z * (1 + math.Erf(z/math.Sqrt2))
			} else {
				f[i] = z / (1 + math.Exp(-1.702*z))
			}
		}
		f2 := n.linear(f, p+"mlp.fc2", c.IntermediateSize, d)
		x = make([]float64, len(x))
		for i := range x {
			x[i] = x1[i] + f2[i]
		}
		states = append(states, x)
	}
	return states
}

// randomWeights makes a full set of weights for cfg, optionally with the
// "text_model." prefix, and their float64 values unless lean is set.
func randomWeights(cfg Config, prefix string, seed uint64, lean ...bool) (map[string][]float64, []safetensors.WriteTensor) {
	r := rand.New(rand.NewPCG(seed, 1))
	m := &Model{cfg: cfg, layers: make([]block, cfg.NumHiddenLayers)}
	vals := map[string][]float64{}
	var ts []safetensors.WriteTensor
	for _, s := range m.specs("") {
		n := s.shape.Numel()
		var f64 []float64
		if len(lean) == 0 {
			f64 = make([]float64, n)
		}
		f32 := make([]float32, n)
		for i := range f32 {
			v := (r.Float64() - 0.5) * 0.6
			if strings.HasSuffix(s.name, "norm1.weight") || strings.HasSuffix(s.name, "norm2.weight") || strings.HasSuffix(s.name, "final_layer_norm.weight") {
				v += 1
			}
			f32[i] = float32(v)
			if f64 != nil {
				f64[i] = float64(f32[i])
			}
		}
		vals[s.name] = f64
		ts = append(ts, safetensors.F32Tensor(prefix+s.name, s.shape, f32))
	}
	return vals, ts
}

func TestAgainstNaive(t *testing.T) {
	for _, tc := range []struct {
		name   string
		act    string
		eos    int
		prefix string
	}{
		{"gelu legacy eos", "gelu", 2, "text_model."},
		{"quick_gelu eos id", "quick_gelu", 90, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{VocabSize: 100, HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 3, NumAttentionHeads: 2,
				MaxPositionEmbeddings: 12, HiddenAct: tc.act, LayerNormEps: 1e-5, BOSTokenID: 1, EOSTokenID: tc.eos, PadTokenID: 0}
			vals, ts := randomWeights(cfg, tc.prefix, 7)
			src, err := safetensors.NewMemory(ts)
			if err != nil {
				t.Fatal(err)
			}
			m, err := New(cpu.New(), cfg, src)
			if err != nil {
				t.Fatal(err)
			}
			ref := naive{cfg: cfg, w: vals}
			// two sequences of 9 tokens; the "eos" (90) sits at different places,
			// followed by smaller and larger ids.
			ids := []int32{1, 5, 7, 90, 3, 95, 90, 0, 0, 1, 40, 41, 42, 43, 90, 99, 2, 2}
			for _, skip := range []int{0, 2, 3} {
				hidden, pooled, err := m.Encode(context.Background(), ids, 2, skip)
				if err != nil {
					t.Fatal(err)
				}
				var wantH, wantP []float32
				for b := 0; b < 2; b++ {
					seq := ids[b*9 : (b+1)*9]
					states := ref.run(seq)
					h := ref.layerNorm(states[len(states)-max(skip, 1)], "final_layer_norm")
					last := ref.layerNorm(states[len(states)-1], "final_layer_norm")
					for _, v := range h {
						wantH = append(wantH, float32(v))
					}
					row := 0
					if tc.eos == 2 {
						for i, id := range seq {
							if id > seq[row] {
								row = i
							}
						}
					} else {
						for i, id := range seq {
							if id == int32(tc.eos) {
								row = i
								break
							}
						}
					}
					for _, v := range last[row*16 : (row+1)*16] {
						wantP = append(wantP, float32(v))
					}
				}
				if e := fixtures.RelErr(hidden, wantH); e > 1e-5 {
					t.Errorf("clip skip %d: hidden relative error %.3g", skip, e)
				}
				if e := fixtures.RelErr(pooled, wantP); e > 1e-5 {
					t.Errorf("clip skip %d: pooled relative error %.3g", skip, e)
				}
			}
		})
	}
}

func TestParseConfig(t *testing.T) {
	good := `{"architectures": ["CLIPTextModel"], "hidden_act": "gelu", "hidden_size": 64, "intermediate_size": 128,
		"num_hidden_layers": 2, "num_attention_heads": 4, "model_type": "clip_text_model", "torch_dtype": "float32",
		"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "layer_norm_eps": 1e-6}`
	cfg, err := ParseConfig([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.HiddenAct, want.HiddenSize, want.IntermediateSize, want.NumHiddenLayers, want.NumAttentionHeads = "gelu", 64, 128, 2, 4
	want.BOSTokenID, want.EOSTokenID, want.PadTokenID, want.LayerNormEps = 0, 2, 1, 1e-6
	if cfg != want {
		t.Fatalf("got %+v\nwant %+v", cfg, want)
	}
	bad := map[string]string{
		`{"hidden_act": "relu"}`:                            "hidden_act",
		`{"hidden_size": 30, "num_attention_heads": 4}`:     "num_attention_heads",
		`{"hidden_size": "big"}`:                            "hidden_size",
		`{"num_hidden_layers": 0}`:                          "num_hidden_layers",
		`{"rope_theta": 10000}`:                             `"rope_theta"`,
		`{"model_type": "clip"}`:                            "model_type",
		`{"architectures": ["T5EncoderModel"]}`:             "architectures",
		`{"layer_norm_eps": -1}`:                            "layer_norm_eps",
		`{"eos_token_id": 60000}`:                           "eos_token_id",
		`{"vocab_size": 1.5}`:                               "vocab_size",
		`[1, 2]`:                                            "config",
		`null`:                                              "config",
		`{"intermediate_size": 4096, "hidden_act": "silu"}`: "hidden_act",
	}
	for in, field := range bad {
		_, err := ParseConfig([]byte(in))
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("ParseConfig(%s) = %v, want an error naming %s", in, err, field)
		}
	}
}

func TestWeightValidation(t *testing.T) {
	cfg := Config{VocabSize: 50, HiddenSize: 8, IntermediateSize: 12, NumHiddenLayers: 2, NumAttentionHeads: 2,
		MaxPositionEmbeddings: 10, HiddenAct: "quick_gelu", LayerNormEps: 1e-5, EOSTokenID: 49}
	_, ts := randomWeights(cfg, "", 1)
	mutate := func(name string, f func(*safetensors.WriteTensor) bool) []safetensors.WriteTensor {
		var out []safetensors.WriteTensor
		for _, w := range ts {
			if w.Name == name && !f(&w) {
				continue
			}
			out = append(out, w)
		}
		return out
	}
	cases := map[string]struct {
		ts   []safetensors.WriteTensor
		want string
	}{
		"missing": {mutate("encoder.layers.1.mlp.fc2.bias", func(*safetensors.WriteTensor) bool { return false }),
			"encoder.layers.1.mlp.fc2.bias is missing"},
		"shape": {mutate("encoder.layers.0.mlp.fc1.weight", func(w *safetensors.WriteTensor) bool {
			*w = safetensors.F32Tensor(w.Name, []int{8, 12}, make([]float32, 96))
			return true
		}), "encoder.layers.0.mlp.fc1.weight has shape (8, 12)"},
		"dtype": {mutate("final_layer_norm.bias", func(w *safetensors.WriteTensor) bool {
			*w = safetensors.I64Tensor(w.Name, []int{8}, make([]int64, 8))
			return true
		}), "final_layer_norm.bias has dtype I64"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			src, err := safetensors.NewMemory(c.ts)
			if err != nil {
				t.Fatal(err)
			}
			_, err = New(cpu.New(), cfg, src)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New = %v, want an error containing %q", err, c.want)
			}
		})
	}
	// The config size used for the shape check is reported for vocab too.
	small := cfg
	small.VocabSize, small.EOSTokenID = 40, 30
	src, _ := safetensors.NewMemory(ts)
	if _, err := New(cpu.New(), small, src); err == nil || !strings.Contains(err.Error(), "embeddings.token_embedding.weight") {
		t.Fatalf("vocab mismatch: %v", err)
	}
}

func TestEncodeErrors(t *testing.T) {
	cfg := Config{VocabSize: 50, HiddenSize: 8, IntermediateSize: 12, NumHiddenLayers: 2, NumAttentionHeads: 2,
		MaxPositionEmbeddings: 10, HiddenAct: "quick_gelu", LayerNormEps: 1e-5, EOSTokenID: 49}
	_, ts := randomWeights(cfg, "", 1)
	src, _ := safetensors.NewMemory(ts)
	m, err := New(cpu.New(), cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, f := range map[string]func() error{
		"empty":       func() error { _, _, err := m.Encode(ctx, nil, 1, 0); return err },
		"split":       func() error { _, _, err := m.Encode(ctx, []int32{1, 2, 3}, 2, 0); return err },
		"too long":    func() error { _, _, err := m.Encode(ctx, make([]int32, 11), 1, 0); return err },
		"bad id":      func() error { _, _, err := m.Encode(ctx, []int32{1, 50}, 1, 0); return err },
		"negative id": func() error { _, _, err := m.Encode(ctx, []int32{-1}, 1, 0); return err },
		"clip skip":   func() error { _, _, err := m.Encode(ctx, []int32{1}, 1, 3); return err },
	} {
		if err := f(); err == nil || !strings.HasPrefix(err.Error(), "clip: encode:") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := m.Encode(cancelled, []int32{1, 2}, 1, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: err = %v", err)
	}
}

// BenchmarkEncodeFixture times the text encoder on one 77-token prompt of
// the sd15-tiny fixture model.
func BenchmarkEncodeFixture(b *testing.B) {
	m := loadFixtureModel(b)
	ref := reference(b)
	ids, _ := referenceIDs(b, ref)
	ctx := context.Background()
	for b.Loop() {
		if _, _, err := m.Encode(ctx, ids[:77], 1, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeSD15Size times one 77-token prompt through a text encoder
// of SD 1.x size (hidden 768, 12 layers, 12 heads, MLP 3072) with random
// weights: the work a real checkpoint costs.
func BenchmarkEncodeSD15Size(b *testing.B) {
	cfg := DefaultConfig()
	cfg.HiddenSize, cfg.IntermediateSize, cfg.NumAttentionHeads = 768, 3072, 12
	_, ts := randomWeights(cfg, "", 3, true)
	src, err := safetensors.NewMemory(ts)
	if err != nil {
		b.Fatal(err)
	}
	m, err := New(cpu.New(), cfg, src)
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]int32, 77)
	for i := range ids {
		ids[i] = int32(49407)
	}
	ids[0] = 49406
	ctx := context.Background()
	for b.Loop() {
		if _, _, err := m.Encode(ctx, ids, 1, 0); err != nil {
			b.Fatal(err)
		}
	}
}
