package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend/cpu"
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
	for _, bad := range []string{"sdxl", "sd15@100", "sd15@x"} {
		if _, _, _, err := Synthetic(bad, 1); err == nil {
			t.Errorf("%s: want an error", bad)
		}
	}
}
