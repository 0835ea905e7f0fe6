package sdengine

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/model/qwenimage/qitest"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/worker"
)

// TestQwenImageRunsThroughGenerateBatch: a Qwen-Image model (own sampling
// loop) loads through the family registry, declines running batches
// (CanStep false) and generates through GenerateBatch as through Generate.
func TestQwenImageRunsThroughGenerateBatch(t *testing.T) {
	reg := catalog.New(map[string]string{"qwen": filepath.Join(qitest.Dir(), "pipe")}, "", "")
	reg.Refresh()
	cm, ok := reg.Get("qwen")
	if !ok {
		t.Fatalf("qwen not registered: %v", reg.Problems())
	}
	e, err := New("cpu", nil)
	if err != nil {
		t.Fatal(err)
	}
	wm, err := e.Load(context.Background(), cm)
	if err != nil {
		t.Fatal(err)
	}
	defer wm.Close()
	m := wm.(*Model)
	if m.CanStep() {
		t.Fatal("a model with its own loop offers running batches")
	}
	req := worker.Request{Prompt: "a cat", NegativePrompt: "blurry", Width: 48, Height: 64, Steps: 3, N: 2, Guidance: 4, Seed: 3}
	steps := 0
	res := m.GenerateBatch(context.Background(), []worker.BatchItem{{Ctx: context.Background(), Request: req}},
		func(int, worker.Progress) { steps++ })
	if res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	if steps != 6 || len(res[0].Result.Images) != 2 || res[0].Result.Seeds[1] != 4 {
		t.Fatalf("%d progress calls, %d images, seeds %v", steps, len(res[0].Result.Images), res[0].Result.Seeds)
	}
	alone, err := m.Generate(context.Background(), worker.Request{Prompt: "a cat", NegativePrompt: "blurry", Width: 48, Height: 64,
		Steps: 3, N: 1, Guidance: 4, Seed: 4}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := alone.Images[0], res[0].Result.Images[1]; a.At(5, 7) != b.At(5, 7) || a.At(47, 63) != b.At(47, 63) {
		t.Fatal("image 1 of seed 3 differs from seed 4 run alone")
	}
}

// TestSyntheticQwenImageServes: synthetic:qwen-image, enabled in the
// catalog, loads in the engine (built in memory by its family) and
// generates with the family's defaults.
func TestSyntheticQwenImageServes(t *testing.T) {
	reg := catalog.New(map[string]string{"syn": "synthetic:qwen-image"}, "", "syn")
	reg.AllowSynthetic(true)
	reg.Refresh()
	cm, ok := reg.Get("syn")
	if !ok || cm.Family != "qwen-image" || cm.DefaultSteps != 50 || cm.Sampler == "" {
		t.Fatalf("catalog: %+v %v", cm, reg.Problems())
	}
	e, err := New("cpu", nil)
	if err != nil {
		t.Fatal(err)
	}
	wm, err := e.Load(context.Background(), cm)
	if err != nil {
		t.Fatal(err)
	}
	defer wm.Close()
	res, err := wm.Generate(context.Background(), worker.Request{Prompt: "a fox", Width: 64, Height: 48, Steps: 2, N: 1, Guidance: 4, Seed: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != 1 || res.Images[0].Bounds().Dx() != 64 {
		t.Fatalf("images %v", res.Images)
	}
}
