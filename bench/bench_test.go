package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
	"github.com/kiln-project/kiln/core/checkpoint"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/core/tokenizer"
	"github.com/kiln-project/kiln/cuda"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// TestRunFixtureOnCPU runs the whole suite on the fixture model on the CPU
// and checks that every measurement is filled in.
func TestRunFixtureOnCPU(t *testing.T) {
	dir := fixtures.Require(t, "sd15-tiny/model")
	o := DefaultOptions()
	o.Models = []string{dir}
	o.Batches = []int{1, 2}
	o.Steps, o.Iterations, o.Warmup = 2, 2, 1
	var bar bytes.Buffer
	rep, err := Run(context.Background(), &cuda.Selection{Backend: cpu.New(), Reason: "test"}, o, NewProgress(&bar))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2 {
		t.Fatalf("%d results", len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.TextEncoder.N != 2 || r.UNetStep.N != 2 || r.VAEDecode.N != 2 || r.EndToEnd.N != 2 || r.StepInterval.N == 0 {
			t.Errorf("batch %d: missing measurements %+v", r.Batch, r)
		}
		if r.EndToEnd.P50 <= 0 || r.ImagesPerSecond <= 0 || r.Width != 64 {
			t.Errorf("batch %d: %+v", r.Batch, r)
		}
	}
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Results) != 2 {
		t.Fatalf("JSON round trip: %v", err)
	}
	var tbl bytes.Buffer
	rep.WriteTable(&tbl)
	if !strings.Contains(tbl.String(), "img/s") {
		t.Fatalf("table:\n%s", tbl.String())
	}
	if !strings.Contains(bar.String(), "100%") {
		t.Fatalf("progress bar never finished: %q", bar.String())
	}
}

// TestSyntheticModels builds each synthetic architecture's description
// without generating weights, and checks the byte tokenizer.
// TestSyntheticSDXL: the synthetic SDXL base and refiner hold every tensor
// their published configs need, with the right shapes (building them would
// take ~10 GB on the CPU backend, so the check is against the layouts).
func TestSyntheticSDXL(t *testing.T) {
	for _, name := range []string{"sdxl", "sdxl-refiner@768"} {
		m, size, cleanup, err := Synthetic(name, 1)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer cleanup()
		if want := map[string]int{"sdxl": 1024, "sdxl-refiner@768": 768}[name]; size != want || m.Family != checkpoint.FamilySDXL {
			t.Errorf("%s: size %d family %q", name, size, m.Family)
		}
		ul, err := checkpoint.ParseUNetLayout(m.UNetConfig)
		if err != nil {
			t.Fatal(err)
		}
		check := func(what string, src safetensors.Source, want []checkpoint.TensorSpec) {
			t.Helper()
			if n := len(src.Names()); n != len(want) {
				t.Errorf("%s %s: %d tensors, want %d", name, what, n, len(want))
			}
			for _, w := range want {
				info, ok := src.Info(w.Name)
				if !ok || !slices.Equal(info.Shape, w.Shape) {
					t.Fatalf("%s %s: %s is %v, want %v", name, what, w.Name, info.Shape, w.Shape)
				}
			}
		}
		check("unet", m.UNet, ul.ExpectedTensors())
		t2, err := checkpoint.ParseTextLayout(m.TextEncoder2Config)
		if err != nil {
			t.Fatal(err)
		}
		check("text_encoder_2", m.TextEncoder2, t2.ExpectedTensors())
		if m.TextEncoder != nil {
			t1, err := checkpoint.ParseTextLayout(m.TextEncoderConfig)
			if err != nil {
				t.Fatal(err)
			}
			check("text_encoder", m.TextEncoder, t1.ExpectedTensors())
		}
		if (m.TextEncoder == nil) != strings.HasPrefix(name, "sdxl-refiner") {
			t.Errorf("%s: first text encoder present %v", name, m.TextEncoder != nil)
		}
	}
}

func TestSyntheticModels(t *testing.T) {
	for _, name := range []string{"sd15", "sd15@768", "sd21"} {
		m, size, cleanup, err := Synthetic(name, 1)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if want := map[string]int{"sd15": 512, "sd15@768": 768, "sd21": 768}[name]; size != want {
			t.Errorf("%s: size %d, want %d", name, size, want)
		}
		tok, err := tokenizer.Load(m.TokenizerDir)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ids := tok.Encode("a cat")
		if len(ids) != 4 { // a</w> c a t</w>: CLIP drops the spaces between words
			t.Errorf("%s: %q → %v, want one token per character", name, "a cat", ids)
		}
		if _, ok := m.UNet.Info("conv_in.weight"); !ok {
			t.Errorf("%s: UNet source lacks conv_in.weight", name)
		}
		cleanup()
	}
	for _, bad := range []string{"sdxl2", "sd15@100", "sd15@x", "sdxl@100"} {
		if _, _, _, err := Synthetic(bad, 1); err == nil {
			t.Errorf("%s: want an error", bad)
		}
	}
}

// TestRunSDXLFixtureOnCPU runs the suite, components included, on the tiny
// SDXL fixture: the components go through the family seam, so the
// denoiser step carries SDXL's pooled text and time ids (an SD-only path
// would fail to build or to run it).
func TestRunSDXLFixtureOnCPU(t *testing.T) {
	o := DefaultOptions()
	o.Models = []string{"../core/model/sdxl/testdata/base"}
	o.Batches = []int{1, 2}
	o.Steps, o.Iterations, o.Warmup, o.Guidance = 2, 1, 0, 5
	rep, err := Run(context.Background(), &cuda.Selection{Backend: cpu.New(), Reason: "test"}, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2 {
		t.Fatalf("%d results", len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.TextEncoder.N != 1 || r.UNetStep.N != 1 || r.VAEDecode.N != 1 || r.EndToEnd.N != 1 || r.Width != 64 {
			t.Errorf("batch %d: missing measurements %+v", r.Batch, r)
		}
	}
}
