package pipeline

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/backend"
	"github.com/kiln-project/kiln/core/lora"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// asDoRA gives every UNet factor of l a DoRA magnitude: the row norms of
// W + s·ΔW (s = weight·Scale) times gain. With gain 1 DoRA equals the plain
// LoRA exactly, which the unmerged path computes independently.
func asDoRA(t *testing.T, p *Pipeline, l *lora.LoRA, weight, gain float32) {
	t.Helper()
	a, err := p.adaptable()
	if err != nil {
		t.Fatal(err)
	}
	tg := a.LoRATargets()[lora.UNet].(interface {
		lora.Merger
		Backend() backend.Backend
	})
	for _, f := range l.Factors[lora.UNet] {
		if f.Conv() {
			continue
		}
		// V = W + s·Up·Down, accumulated rank by rank
		v := tg.Backend().ToFloat32(tg.Weight(f.Module))
		in, s := f.In(), weight*f.Scale
		for k := 0; k < f.Rank; k++ {
			for o := 0; o < f.Out; o++ {
				u := s * f.Up[o*f.Rank+k]
				for i, d := range f.Down[k*in : (k+1)*in] {
					v[o*in+i] += u * d
				}
			}
		}
		f.Magnitude = make([]float32, f.Out)
		for o := range f.Magnitude {
			var sq float64
			for _, x := range v[o*in : (o+1)*in] {
				sq += float64(x) * float64(x)
			}
			f.Magnitude[o] = gain * float32(math.Sqrt(sq))
		}
	}
}

// TestDoRAMerged: a DoRA LoRA runs through merging; with magnitudes equal
// to the merged rows' norms it equals the plain LoRA (unmerged path), with
// other magnitudes it differs; a DoRA job cannot share a batch with a job
// using other LoRAs.
func TestDoRAMerged(t *testing.T) {
	p := loraPipeline(t)
	plain := loadLoRA(t, p, "a", nil)
	dora := loadLoRA(t, p, "a", nil)
	asDoRA(t, p, dora, 0.8, 1)
	if !dora.DoRA(lora.UNet) {
		t.Fatal("no DoRA factors")
	}
	prompt := "a red circle on a blue background"
	ref, err := p.Generate(context.Background(), loraRequest(prompt, lora.Use{Name: "a", LoRA: plain, UNet: 0.8}), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Generate(context.Background(), loraRequest(prompt, lora.Use{Name: "a", LoRA: dora, UNet: 0.8}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if e := fixtures.RelErr(got.Latents, ref.Latents); e > 1e-4 {
		t.Errorf("DoRA with m = ‖W+sΔW‖ differs from the LoRA by %.3g", e)
	}
	scaled := loadLoRA(t, p, "a", nil)
	asDoRA(t, p, scaled, 0.8, 1.1)
	other, err := p.Generate(context.Background(), loraRequest(prompt, lora.Use{Name: "a", LoRA: scaled, UNet: 0.8}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if fixtures.RelErr(other.Latents, ref.Latents) < 1e-3 {
		t.Error("DoRA magnitudes changed nothing")
	}
	// in one batch with a plain job and a LoRA job, each as alone
	reqs := []Request{loraRequest(prompt, lora.Use{Name: "a", LoRA: dora, UNet: 0.8}), loraRequest(prompt),
		loraRequest(prompt, lora.Use{Name: "a", LoRA: plain, UNet: 0.8})}
	var jobs []BatchJob
	for _, r := range reqs {
		jobs = append(jobs, BatchJob{Request: r})
	}
	out := p.GenerateBatch(context.Background(), jobs, nil)
	for i, r := range reqs {
		alone, err := p.Generate(context.Background(), r, nil)
		if err != nil || out[i].Err != nil {
			t.Fatal(err, out[i].Err)
		}
		if e := fixtures.RelErr(out[i].Result.Latents, alone.Latents); e > 1e-5 {
			t.Errorf("job %d: batched latents differ from alone by %.3g", i, e)
		}
	}
	// a group mixing them is refused, not run wrongly
	a, _ := p.adaptable()
	if _, err := p.mergeUNet(a, []*batchState{{job: &job{req: reqs[0]}}, {job: &job{req: reqs[1]}}}, nil, 2, "a"); err == nil || !strings.Contains(err.Error(), "cannot share a batch") {
		t.Errorf("mixed merge group: %v", err)
	}
}
