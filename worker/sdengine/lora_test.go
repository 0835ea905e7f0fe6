package sdengine

import (
	"context"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/server/loralib"
	"github.com/kiln-project/kiln/worker"
)

// install copies a LoRA fixture into a models folder's loras.
func install(t *testing.T, dir, kind, name string) loralib.Entry {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("../../core/lora/testdata/sd15", name+".safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, kind), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, kind, name+".safetensors"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := loralib.New(dir).Find(kind, name)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestBatchWithLoRAs runs jobs with different LoRAs (and none, and one with
// an embedding) as one batch through the engine: each equals the job run
// alone, the LoRA changes the image, and a LoRA that no longer matches the
// job's hash fails that job alone.
func TestBatchWithLoRAs(t *testing.T) {
	dir := t.TempDir()
	a := install(t, dir, loralib.LoRAs, "a")
	b := install(t, dir, loralib.LoRAs, "b")
	emb := install(t, dir, loralib.Embeddings, "kilnstyle")
	e, _ := New("cpu", nil)
	e.SetLibrary(loralib.New(dir))
	wm, err := e.Load(context.Background(), fixtureModel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer wm.Close()
	m := wm.(*Model)
	base := worker.Request{Prompt: "a red circle", Width: 64, Height: 64, Steps: 3, N: 1, Guidance: 6, Sampler: "euler", Seed: 5}
	withA := base
	withA.Prompt = "a red circle <lora:a:0.7>"
	withA.LoRAs = []jobs.LoRA{{Name: "a", Weight: 0.7, TextWeight: 0.7, Hash: a.Hash}}
	withB := base
	withB.Prompt = "a kilnstyle circle"
	withB.LoRAs = []jobs.LoRA{{Name: "b", Weight: 1, TextWeight: 1, Hash: b.Hash}}
	withB.Embeddings = []jobs.Embedding{{Name: "kilnstyle", Hash: emb.Hash}}
	stale := base
	stale.LoRAs = []jobs.LoRA{{Name: "a", Weight: 1, Hash: strings.Repeat("0", 64)}}
	// an embedding made for another model (width 5) is not applied
	if err := safetensors.WriteFile(filepath.Join(dir, loralib.Embeddings, "circle.safetensors"),
		[]safetensors.WriteTensor{safetensors.F32Tensor("emb_params", []int{1, 5}, make([]float32, 5))}, nil); err != nil {
		t.Fatal(err)
	}
	other := base
	other.Embeddings = []jobs.Embedding{{Name: "circle"}}
	reqs := []worker.Request{withA, withB, base, stale, other}
	var items []worker.BatchItem
	for _, r := range reqs {
		items = append(items, worker.BatchItem{Ctx: context.Background(), Request: r})
	}
	res := m.GenerateBatch(context.Background(), items, nil)
	if res[3].Err == nil || !strings.Contains(res[3].Err.Error(), "changed since the job was submitted") {
		t.Fatalf("stale LoRA: %v", res[3].Err)
	}
	for i, r := range reqs[:3] {
		if res[i].Err != nil {
			t.Fatal(res[i].Err)
		}
		alone, err := m.Generate(context.Background(), r, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := maxPixelDiff(res[i].Result.Images[0], alone.Images[0]); d > 1 {
			t.Errorf("job %d: batched image differs from alone by %d levels", i, d)
		}
	}
	if res[4].Err != nil || maxPixelDiff(res[4].Result.Images[0], res[2].Result.Images[0]) > 1 {
		t.Errorf("an embedding for another model changed the job: %v", res[4].Err)
	}
	if d := maxPixelDiff(res[0].Result.Images[0], res[2].Result.Images[0]); d == 0 {
		t.Error("LoRA a changed nothing")
	}
	// a, b and kilnstyle parsed once each (and circle tried), every later
	// lookup a hit
	st := e.LoRAStats()
	if st.Misses != 4 || st.Hits != 3 || st.Entries != 3 || st.Bytes <= 0 {
		t.Errorf("cache stats %+v", st)
	}
	wm.Close()
	if st := e.LoRAStats(); st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("after the model closed: %+v", st)
	}
}

// maxPixelDiff is the largest difference of one 8-bit channel.
func maxPixelDiff(a, b image.Image) int {
	d := 0
	r := a.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c1, c2 := color.NRGBAModel.Convert(a.At(x, y)).(color.NRGBA), color.NRGBAModel.Convert(b.At(x, y)).(color.NRGBA)
			for _, p := range [][2]uint8{{c1.R, c2.R}, {c1.G, c2.G}, {c1.B, c2.B}} {
				d = max(d, abs(int(p[0])-int(p[1])))
			}
		}
	}
	return d
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// TestRunningBatchWithLoRAs adds jobs with different LoRAs to a running
// batch (the worker's continuous batching): each equals the job alone.
func TestRunningBatchWithLoRAs(t *testing.T) {
	dir := t.TempDir()
	a := install(t, dir, loralib.LoRAs, "a")
	b := install(t, dir, loralib.LoRAs, "b")
	e, _ := New("cpu", nil)
	e.SetLibrary(loralib.New(dir))
	wm, err := e.Load(context.Background(), fixtureModel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer wm.Close()
	m := wm.(*Model)
	base := worker.Request{Prompt: "a red circle", Width: 64, Height: 64, Steps: 3, N: 1, Guidance: 6, Sampler: "euler", Seed: 5}
	withA, withB := base, base
	withA.LoRAs = []jobs.LoRA{{Name: "a", Weight: 1, TextWeight: 1, Hash: a.Hash}}
	withB.LoRAs = []jobs.LoRA{{Name: "b", Weight: 0.5, TextWeight: 0.5, Hash: b.Hash}}
	reqs := []worker.Request{withA, withB, base}
	rb := m.StartBatch(context.Background())
	ids := map[int]int{}
	for i, r := range reqs {
		id, err := rb.Add(worker.BatchItem{Ctx: context.Background(), Request: r}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = i
	}
	got := make([]*worker.Result, len(reqs))
	for rb.Len() > 0 {
		for _, d := range rb.Step() {
			if d.Err != nil {
				t.Fatal(d.Err)
			}
			got[ids[d.ID]] = d.Result
		}
	}
	for i, r := range reqs {
		alone, err := m.Generate(context.Background(), r, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := maxPixelDiff(got[i].Images[0], alone.Images[0]); d > 1 {
			t.Errorf("job %d: running batch differs from alone by %d levels", i, d)
		}
	}
	if maxPixelDiff(got[0].Images[0], got[2].Images[0]) == 0 {
		t.Error("LoRA a changed nothing in the running batch")
	}
}
