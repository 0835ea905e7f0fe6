package conditioning

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/model/clip"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tokenizer"
	"github.com/kiln-project/kiln/internal/fixtures"
)

const (
	seqLen = 77
	dim    = 32 // sd15-tiny hidden size
)

// newEncoder builds the sd15-tiny tokenizer and text encoder on the CPU.
func newEncoder(t testing.TB) *Encoder {
	t.Helper()
	tok, err := tokenizer.Load(fixtures.Require(t, "sd15-tiny/model/tokenizer"))
	if err != nil {
		t.Fatal(err)
	}
	dir := fixtures.Require(t, "sd15-tiny/model/text_encoder")
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clip.ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m, err := clip.New(cpu.New(), cfg, f)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(tok, m)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// referencePrompts reads the prompts of reference.json (stopping before
// the parts of the file that hold NaN).
func referencePrompts(t testing.TB) []string {
	t.Helper()
	data, err := os.ReadFile(fixtures.Require(t, "sd15-tiny/reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		if key == "prompts" {
			var p []string
			if err := dec.Decode(&p); err != nil {
				t.Fatal(err)
			}
			return p
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("reference.json has no prompts")
	return nil
}

func TestEmphasisOffMatchesReference(t *testing.T) {
	e := newEncoder(t)
	prompts := referencePrompts(t)
	ref, err := safetensors.Open(fixtures.Require(t, "sd15-tiny/reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	want, _, err := safetensors.Float32(ref, "te/last_hidden_state")
	if err != nil {
		t.Fatal(err)
	}
	wantSkip2, _, err := safetensors.Float32(ref, "te/clip_skip2")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, p := range prompts {
		rows := want[i*seqLen*dim : (i+1)*seqLen*dim]
		got, err := e.Encode(ctx, p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if rel := fixtures.RelErr(got, rows); rel > 1e-4 {
			t.Errorf("prompt %d %q: relative error %.3g", i, p, rel)
		}
		got2, err := e.Encode(ctx, p, Options{ClipSkip: 2})
		if err != nil {
			t.Fatal(err)
		}
		if rel := fixtures.RelErr(got2, wantSkip2[i*seqLen*dim:(i+1)*seqLen*dim]); rel > 1e-4 {
			t.Errorf("prompt %d clip skip 2: relative error %.3g", i, rel)
		}
	}
}

// ratios returns, per row, got/ref when that ratio is the same for every
// element of the row (within tol), else NaN.
func rowRatios(got, ref []float32, d int, tol float64) []float64 {
	out := make([]float64, len(ref)/d)
	for r := range out {
		var first float64
		for i := 0; i < d; i++ {
			g, w := float64(got[r*d+i]), float64(ref[r*d+i])
			q := g / w
			if i == 0 {
				first = q
			} else if math.Abs(q-first) > tol*math.Abs(first) {
				first = math.NaN()
				break
			}
		}
		out[r] = first
	}
	return out
}

func TestEmphasisWeights(t *testing.T) {
	e := newEncoder(t)
	ctx := context.Background()
	for _, tc := range []struct {
		prompt, literal string
		weights         map[int]float64 // token row → weight
	}{
		{"a (red:1.5) circle", "a red circle", map[int]float64{2: 1.5}},
		{"a ((red)) [circle]", "a red circle", map[int]float64{2: 1.1 * 1.1, 3: 1 / 1.1}},
		{"(masterpiece:1.2), best quality", "masterpiece, best quality", map[int]float64{1: 1.2}},
		{"(a red:0.5) circle", "a red circle", map[int]float64{1: 0.5, 2: 0.5}},
	} {
		t.Run(tc.prompt, func(t *testing.T) {
			plain, err := e.Encode(ctx, tc.literal, Options{})
			if err != nil {
				t.Fatal(err)
			}
			res, err := e.EncodeResult(ctx, tc.prompt, Options{Emphasis: true})
			if err != nil {
				t.Fatal(err)
			}
			lit, _ := Tokenize(e.Tokenizer(), tc.literal, Options{})
			if !slices.Equal(res.Chunks[0].IDs, lit[0].IDs) {
				t.Fatalf("emphasis changed the tokens: %v vs %v", res.Chunks[0].IDs, lit[0].IDs)
			}
			got := res.Hidden
			// The mean is restored up to float32 rounding of the elements,
			// measured against their typical magnitude.
			var mag float64
			for _, v := range plain {
				mag += math.Abs(float64(v)) / float64(len(plain))
			}
			if m0, m1 := mean(plain), mean(got); math.Abs(m1-m0) > 1e-7*mag {
				t.Errorf("mean %.9g, want the unweighted %.9g", m1, m0)
			}
			ratios := rowRatios(got, plain, dim, 1e-5)
			scale := ratios[0]
			if math.IsNaN(scale) || math.Abs(scale-1) < 1e-6 {
				t.Fatalf("row 0 ratio %v: want a uniform mean-restoring factor other than 1", scale)
			}
			for r, q := range ratios {
				w, weighted := tc.weights[r]
				if !weighted {
					w = 1
				}
				if math.IsNaN(q) || math.Abs(q/scale-w) > 1e-5 {
					t.Errorf("row %d scaled by %.6g/%.6g = %.6g, want weight %.6g", r, q, scale, q/scale, w)
				}
			}
		})
	}
	// Without emphasis the brackets are text: the ids differ from the literal.
	a, _ := Tokenize(e.Tokenizer(), "a (red:1.5) circle", Options{})
	b, _ := Tokenize(e.Tokenizer(), "a red circle", Options{})
	if slices.Equal(a[0].IDs, b[0].IDs) || a[0].Weighted() {
		t.Fatal("emphasis off must tokenize the brackets literally with weight 1")
	}
}

func TestLongPrompts(t *testing.T) {
	e := newEncoder(t)
	tok := e.Tokenizer()
	cat, _ := tok.ID("cat</w>")
	ctx := context.Background()
	prompt := strings.Repeat("cat ", 150)
	if n := len(tok.Encode(prompt)); n != 150 {
		t.Fatalf("prompt has %d tokens, want 150", n)
	}
	res, err := e.EncodeResult(ctx, prompt, Options{LongPrompts: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Chunks) != 2 || res.Length != 2*seqLen || len(res.Hidden) != 2*seqLen*dim {
		t.Fatalf("150 tokens: %d chunks, length %d, %d values", len(res.Chunks), res.Length, len(res.Hidden))
	}
	for _, c := range res.Chunks {
		if c.IDs[0] != tok.BOS() || c.IDs[76] != tok.EOS() {
			t.Fatalf("chunk not framed: %v", c.IDs)
		}
		for _, id := range c.IDs[1:76] {
			if id != cat {
				t.Fatalf("chunk %v", c.IDs)
			}
		}
	}
	// Each chunk is encoded on its own: both equal the 75-token prompt.
	one, err := e.Encode(ctx, strings.Repeat("cat ", 75), Options{LongPrompts: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(one) != seqLen*dim {
		t.Fatalf("75 tokens gave %d values, want one chunk", len(one))
	}
	for c := 0; c < 2; c++ {
		if rel := fixtures.RelErr(res.Hidden[c*seqLen*dim:(c+1)*seqLen*dim], one); rel > 1e-6 {
			t.Errorf("chunk %d differs from the single chunk by %.3g", c, rel)
		}
	}
	// Off: truncated to one chunk.
	trunc, err := e.Encode(ctx, prompt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(trunc) != seqLen*dim {
		t.Fatalf("truncated: %d values", len(trunc))
	}
	counts := map[string]int{"cat ": 151, "": 0}
	for p, tokens := range counts {
		cs, _ := Tokenize(tok, strings.Repeat(p, tokens), Options{LongPrompts: true})
		want := max(1, (tokens+74)/75)
		if len(cs) != want {
			t.Errorf("%d tokens: %d chunks, want %d", tokens, len(cs), want)
		}
	}
	// A weight in the second chunk lands on the right row of that chunk.
	cs, _ := Tokenize(tok, strings.Repeat("cat ", 80)+"(dog:1.3)", Options{Emphasis: true, LongPrompts: true})
	dog, _ := tok.ID("dog</w>")
	if len(cs) != 2 || cs[1].IDs[6] != dog || cs[1].Weights[6] != float32(1.3) || cs[1].Weights[5] != 1 {
		t.Fatalf("second chunk %v %v", cs[1].IDs[:8], cs[1].Weights[:8])
	}
}

func TestBreak(t *testing.T) {
	tok := newEncoder(t).Tokenizer()
	a, _ := tok.ID("a</w>")
	b, _ := tok.ID("b</w>")
	cs, _ := Tokenize(tok, "a BREAK b", Options{Emphasis: true, LongPrompts: true})
	if len(cs) != 2 || cs[0].IDs[1] != a || cs[0].IDs[2] != tok.EOS() || cs[1].IDs[1] != b {
		t.Fatalf("BREAK: %d chunks", len(cs))
	}
	// A BREAK right after a full chunk does not add an empty chunk.
	cs, _ = Tokenize(tok, strings.Repeat("a ", 75)+"BREAK b", Options{Emphasis: true, LongPrompts: true})
	if len(cs) != 2 || cs[1].IDs[1] != b {
		t.Fatalf("BREAK after a full chunk: %d chunks", len(cs))
	}
	// Without long prompts BREAK is dropped; without emphasis it is a word.
	cs, _ = Tokenize(tok, "a BREAK b", Options{Emphasis: true})
	if len(cs) != 1 || cs[0].IDs[2] != b {
		t.Fatalf("BREAK without long prompts: %v", cs[0].IDs[:4])
	}
	cs, _ = Tokenize(tok, "a BREAK b", Options{LongPrompts: true})
	if len(cs) != 1 || cs[0].IDs[3] != b {
		t.Fatalf("BREAK without emphasis: %v", cs[0].IDs[:5])
	}
}

func TestBadWeights(t *testing.T) {
	tok := newEncoder(t).Tokenizer()
	// 400 nines overflow float64, 40 nines overflow float32.
	for _, p := range []string{"(a:" + strings.Repeat("9", 400) + ")", "(a:" + strings.Repeat("9", 40) + ")"} {
		if _, err := Tokenize(tok, p, DefaultOptions()); err == nil || !strings.HasPrefix(err.Error(), "conditioning: weight") {
			t.Errorf("%q: err = %v", p, err)
		}
	}
}

func TestApplyWeights(t *testing.T) {
	z := []float32{1, 2, 3, 4, 5, 6}
	ApplyWeights(z, []float32{1, 1, 1}, 2)
	if !slices.Equal(z, []float32{1, 2, 3, 4, 5, 6}) {
		t.Fatal("weights of 1 changed the chunk")
	}
	ApplyWeights(z, []float32{1, 2, 1}, 2)
	// before: mean 3.5; weighted: 1 2 6 8 5 6 → mean 28/6; factor 3.5·6/28 = 0.75
	want := []float32{0.75, 1.5, 4.5, 6, 3.75, 4.5}
	for i := range z {
		if math.Abs(float64(z[i]-want[i])) > 1e-6 {
			t.Fatalf("got %v want %v", z, want)
		}
	}
}

// BenchmarkEncodePrompt times prompt text → conditioning for one
// emphasised prompt on the sd15-tiny fixture model.
func BenchmarkEncodePrompt(b *testing.B) {
	e := newEncoder(b)
	ctx := context.Background()
	text := "A photo of an (astronaut:1.2) riding a horse on Mars, 4k, [blurry]"
	for b.Loop() {
		if _, err := e.Encode(ctx, text, DefaultOptions()); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzTokenize checks that any prompt gives well-formed chunks or an
// error, never a panic.
func FuzzTokenize(f *testing.F) {
	tok, err := tokenizer.Load(fixtures.Require(f, "sd15-tiny/model/tokenizer"))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"", "a (red:1.5) circle", "BREAK", "((a)", `\(x\)`, strings.Repeat("cat ", 80) + "[dog]", "(a:99999999999999999999999999999999999999999)"} {
		f.Add(s, true, true)
	}
	f.Fuzz(func(t *testing.T, s string, emphasis, long bool) {
		cs, err := Tokenize(tok, s, Options{Emphasis: emphasis, LongPrompts: long})
		if err != nil {
			return
		}
		if len(cs) == 0 || (!long && len(cs) != 1) {
			t.Fatalf("%d chunks", len(cs))
		}
		for _, c := range cs {
			if len(c.IDs) != tok.MaxLength() || len(c.Weights) != len(c.IDs) || c.IDs[0] != tok.BOS() {
				t.Fatalf("malformed chunk %v", c)
			}
			for i, id := range c.IDs {
				if id < 0 || int(id) >= tok.VocabSize() || math.IsInf(float64(c.Weights[i]), 0) || math.IsNaN(float64(c.Weights[i])) {
					t.Fatalf("token %d: id %d weight %v", i, id, c.Weights[i])
				}
			}
		}
	})
}
