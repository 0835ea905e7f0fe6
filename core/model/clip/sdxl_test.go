package clip

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// sdxlTestdata is the committed tiny SDXL fixture folder.
const sdxlTestdata = "../sdxl/testdata"

func openSDXLEncoder(t *testing.T, folder string) *Model {
	t.Helper()
	dir := filepath.Join(sdxlTestdata, "base", folder)
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

func sdxlIDs(t *testing.T, ref safetensors.Source, key string) ([]int32, int) {
	t.Helper()
	ids64, shape, err := safetensors.Int64(ref, key)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int32, len(ids64))
	for i, v := range ids64 {
		ids[i] = int32(v)
	}
	return ids, shape[0]
}

func closeTo(t *testing.T, ref safetensors.Source, key string, got []float32) {
	t.Helper()
	want, _, err := safetensors.Float32(ref, key)
	if err != nil {
		t.Fatal(err)
	}
	if e := fixtures.RelErr(got, want); e > 1e-4 {
		t.Errorf("%s: relative error %.3g > 1e-4", key, e)
	} else {
		t.Logf("%s: relative error %.3g", key, e)
	}
}

// TestSDXLEncoders checks both SDXL text encoders against transformers:
// CLIPTextModel's penultimate hidden state (no final layer norm) and
// CLIPTextModelWithProjection's penultimate state and projected pooled
// output (text_embeds, at the first end-of-text token of ids padded with
// "!").
func TestSDXLEncoders(t *testing.T) {
	ref, err := safetensors.Open(filepath.Join(sdxlTestdata, "reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	ctx := context.Background()

	te1 := openSDXLEncoder(t, "text_encoder")
	if te1.Config().WithProjection {
		t.Fatal("text_encoder: CLIPTextModel read as having a projection")
	}
	ids, n := sdxlIDs(t, ref, "tok/ids1")
	hidden, _, err := te1.HiddenStates(ctx, ids, n, te1.Config().NumHiddenLayers-1)
	if err != nil {
		t.Fatal(err)
	}
	closeTo(t, ref, "te1/penultimate", hidden)
	last, _, err := te1.Encode(ctx, ids, n, 0)
	if err != nil {
		t.Fatal(err)
	}
	closeTo(t, ref, "te1/last_hidden_state", last)

	te2 := openSDXLEncoder(t, "text_encoder_2")
	if !te2.Config().WithProjection {
		t.Fatal("text_encoder_2: CLIPTextModelWithProjection read without its projection")
	}
	ids, n = sdxlIDs(t, ref, "tok/ids2")
	hidden, pooled, err := te2.HiddenStates(ctx, ids, n, te2.Config().NumHiddenLayers-1)
	if err != nil {
		t.Fatal(err)
	}
	closeTo(t, ref, "te2/penultimate", hidden)
	closeTo(t, ref, "te2/text_embeds", pooled)
	if got, want := len(pooled), n*te2.Config().ProjectionDim; got != want {
		t.Fatalf("pooled holds %d values, want %d", got, want)
	}
	last, _, err = te2.HiddenStates(ctx, ids, n, te2.Config().NumHiddenLayers)
	if err != nil {
		t.Fatal(err)
	}
	// hidden_states[-1] is the last layer before the final layer norm, so it
	// must differ from last_hidden_state.
	want, _, _ := safetensors.Float32(ref, "te2/last_hidden_state")
	if e := fixtures.RelErr(last, want); e < 1e-2 {
		t.Errorf("last layer without the final norm equals last_hidden_state (relative error %.3g)", e)
	}
	for _, layer := range []int{0, te2.Config().NumHiddenLayers + 1} {
		if _, _, err := te2.HiddenStates(ctx, ids, n, layer); err == nil || !strings.Contains(err.Error(), "num_hidden_layers") {
			t.Errorf("layer %d: error %v", layer, err)
		}
	}
}

// TestProjectionConfig: the projection follows architectures and needs a
// positive projection_dim.
func TestProjectionConfig(t *testing.T) {
	c, err := ParseConfig([]byte(`{"architectures": ["CLIPTextModelWithProjection"], "projection_dim": 0}`))
	if err == nil || !strings.Contains(err.Error(), "projection_dim") {
		t.Errorf("projection_dim 0: %+v, %v", c, err)
	}
	if _, err := ParseConfig([]byte(`{"architectures": ["CLIPTextModel", "CLIPTextModelWithProjection"]}`)); err == nil {
		t.Error("two architectures accepted")
	}
	dir := filepath.Join(sdxlTestdata, "base", "text_encoder")
	data, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	cfg, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	cfg.WithProjection = true // CLIPTextModel weights hold no text_projection
	f, err := safetensors.Open(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := New(cpu.New(), cfg, f); err == nil || !strings.Contains(err.Error(), "text_projection.weight") {
		t.Errorf("missing projection: %v", err)
	}
}

// TestPublishedSDXLConfigs: SDXL 1.0's published text encoder configs
// parse, the second with its projection.
func TestPublishedSDXLConfigs(t *testing.T) {
	for _, tc := range []struct {
		file          string
		hidden, layer int
		proj          bool
	}{{"sdxl_text_encoder.json", 768, 12, false}, {"sdxl_text_encoder_2.json", 1280, 32, true}} {
		data, err := os.ReadFile(filepath.Join("../modeltest/configs", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseConfig(data)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if c.HiddenSize != tc.hidden || c.NumHiddenLayers != tc.layer || c.WithProjection != tc.proj || (tc.proj && c.ProjectionDim != 1280) {
			t.Errorf("%s: %+v", tc.file, c)
		}
	}
}
