package unet

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tensor"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// fixtureSource returns the fixture UNet's config and weights.
func fixtureSource(t testing.TB) (Config, *safetensors.File) {
	t.Helper()
	dir := fixtures.Require(t, "sd15-tiny/model/unet")
	js, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(js)
	if err != nil {
		t.Fatal(err)
	}
	w, err := safetensors.Open(filepath.Join(dir, "diffusion_pytorch_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return cfg, w
}

// edited returns a view of src with tensor drop left out and tensor
// reshape presented with shape (when not nil).
func edited(t *testing.T, src safetensors.Source, drop, reshape string, shape []int) safetensors.Source {
	t.Helper()
	entries := map[string]safetensors.ViewEntry{}
	for _, n := range src.Names() {
		if n == drop {
			continue
		}
		e := safetensors.ViewEntry{From: n}
		if n == reshape {
			e.Shape = shape
		}
		entries[n] = e
	}
	v, err := safetensors.NewView(src, entries)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// extraSource adds tensors to a source.
type extraSource struct {
	safetensors.Source
	extra *safetensors.Memory
}

func (s extraSource) Names() []string { return append(s.Source.Names(), s.extra.Names()...) }
func (s extraSource) Info(n string) (safetensors.TensorInfo, bool) {
	if i, ok := s.extra.Info(n); ok {
		return i, ok
	}
	return s.Source.Info(n)
}
func (s extraSource) Bytes(n string) ([]byte, error) {
	if _, ok := s.extra.Info(n); ok {
		return s.extra.Bytes(n)
	}
	return s.Source.Bytes(n)
}

// failingSource fails to read one tensor, as a truncated or unreadable
// file would.
type failingSource struct {
	safetensors.Source
	name string
}

func (s failingSource) Bytes(n string) ([]byte, error) {
	if n == s.name {
		return nil, errors.New("read error")
	}
	return s.Source.Bytes(n)
}

func TestBadCheckpoints(t *testing.T) {
	cfg, w := fixtureSource(t)
	mem := func(ts ...safetensors.WriteTensor) *safetensors.Memory {
		m, err := safetensors.NewMemory(ts)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	attnK := "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"
	for _, tc := range []struct {
		name  string
		src   safetensors.Source
		wants []string
	}{
		{"missing tensor", edited(t, w, "mid_block.resnets.1.conv2.bias", "", nil),
			[]string{"missing tensor", "mid_block.resnets.1.conv2.bias"}},
		{"wrong shape", edited(t, w, "", attnK, []int{32, 64}),
			[]string{attnK, "[32 64]", "[64 32]"}},
		{"conv seen as linear", edited(t, w, "", "down_blocks.1.attentions.0.proj_in.weight", []int{64, 64}),
			[]string{"down_blocks.1.attentions.0.proj_in.weight", "[64 64 1 1]"}},
		{"unexpected tensor", extraSource{w, mem(safetensors.F32Tensor("down_blocks.0.resnets.2.conv1.bias", []int{32}, make([]float32, 32)))},
			[]string{"unexpected tensor", "down_blocks.0.resnets.2.conv1.bias"}},
		{"integer weight", extraSource{edited(t, w, "conv_in.bias", "", nil), mem(safetensors.I64Tensor("conv_in.bias", []int{32}, make([]int64, 32)))},
			[]string{"conv_in.bias", "I64"}},
		{"unreadable tensor", failingSource{w, "up_blocks.1.resnets.2.norm2.weight"},
			[]string{"up_blocks.1.resnets.2.norm2.weight", "read error"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(cpu.New(), cfg, tc.src)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, want := range tc.wants {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func TestFixtureAsFloat16(t *testing.T) {
	cfg, w := fixtureSource(t)
	ref, err := safetensors.Open(fixtures.Require(t, "sd15-tiny/reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	var ts []safetensors.WriteTensor
	for _, n := range w.Names() {
		v, shape, err := safetensors.Float32(w, n)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, safetensors.F16Tensor(n, shape, v))
	}
	half, err := safetensors.NewMemory(ts)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cpu.New(), cfg, half)
	if err != nil {
		t.Fatal(err)
	}
	sample, ss := refTensor(t, ref, "unet/in_sample")
	cond, cs := refTensor(t, ref, "unet/in_context")
	got, err := m.Forward(context.Background(), sample, [4]int{ss[0], ss[1], ss[2], ss[3]}, []float32{250}, cond, cs[1])
	if err != nil {
		t.Fatal(err)
	}
	want, _ := refTensor(t, ref, "unet/out_scalar_t")
	// fp16 weights are rounded to 11 bits: close, but not float32-exact.
	if e := fixtures.RelErr(got, want); e > 5e-3 {
		t.Fatalf("relative error %.3g with fp16 weights", e)
	} else {
		t.Logf("relative error %.3g with fp16 weights", e)
	}
}

func TestForwardRejectsBadInput(t *testing.T) {
	m, _ := loadFixture(t)
	good := func() ([]float32, [4]int, []float32, []float32, int) {
		return make([]float32, 2*4*16*16), [4]int{2, 4, 16, 16}, []float32{1, 2}, make([]float32, 2*7*32), 7
	}
	for _, tc := range []struct {
		name string
		edit func(s *[]float32, sh *[4]int, ts *[]float32, c *[]float32, l *int)
		want string
	}{
		{"channels", func(s *[]float32, sh *[4]int, ts *[]float32, c *[]float32, l *int) { sh[1] = 3 }, "sample shape"},
		{"length", func(s *[]float32, sh *[4]int, ts *[]float32, c *[]float32, l *int) { *s = (*s)[1:] }, "sample holds"},
		{"timesteps", func(s *[]float32, sh *[4]int, ts *[]float32, c *[]float32, l *int) { *ts = []float32{1, 2, 3} }, "3 timesteps"},
		{"no timesteps", func(s *[]float32, sh *[4]int, ts *[]float32, c *[]float32, l *int) { *ts = nil }, "0 timesteps"},
		{"context", func(s *[]float32, sh *[4]int, ts *[]float32, c *[]float32, l *int) { *l = 8 }, "context holds"},
		{"zero batch", func(s *[]float32, sh *[4]int, ts *[]float32, c *[]float32, l *int) { sh[0] = 0 }, "sample shape"},
	} {
		s, sh, ts, c, l := good()
		tc.edit(&s, &sh, &ts, &c, &l)
		_, err := m.Forward(context.Background(), s, sh, ts, c, l)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	s, sh, ts, c, l := good()
	if _, err := m.Forward(context.Background(), s, sh, ts, c, l); err != nil {
		t.Fatalf("good input: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Forward(ctx, s, sh, ts, c, l); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
}

// TestOddSizes runs sizes that do not divide by the downsampling factor,
// which diffusers handles by upsampling to the skip's size.
func TestOddSizes(t *testing.T) {
	m, _ := loadFixture(t)
	// Batch 2 at 2×32 makes the first level's activations (2, 32, 2, 32):
	// the per-channel time embedding (2, 32) must still add per channel.
	for _, hw := range [][3]int{{1, 15, 17}, {1, 1, 1}, {1, 3, 16}, {2, 2, 32}} {
		n := hw[0] * 4 * hw[1] * hw[2]
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(i%5) - 2
		}
		out, err := m.Forward(context.Background(), s, [4]int{hw[0], 4, hw[1], hw[2]}, []float32{10}, make([]float32, hw[0]*3*32), 3)
		if err != nil {
			t.Fatalf("%v: %v", hw, err)
		}
		if len(out) != n {
			t.Fatalf("%v: %d outputs, want %d", hw, len(out), n)
		}
		for _, v := range out {
			if v != v {
				t.Fatalf("%v: NaN", hw)
			}
		}
	}
}

func TestCropOnHost(t *testing.T) {
	be := cpu.New()
	x := be.FromFloat32(tensor.Shape{1, 2, 2, 3}, []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	got := be.ToFloat32(cropOnHost(be, x, 1, 2))
	if want := []float32{1, 2, 7, 8}; !slices.Equal(got, want) {
		t.Fatalf("crop = %v, want %v", got, want)
	}
}
