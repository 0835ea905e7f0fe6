package sdengine

import (
	"context"
	"encoding/json"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kiln-project/kiln/core/conditioning"
	"github.com/kiln-project/kiln/internal/fixtures"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/worker"
	"github.com/kiln-project/kiln/worker/modelcache"
	"github.com/kiln-project/kiln/worker/textcache"
)

func fixtureModel(t *testing.T) catalog.Model {
	dir := fixtures.Require(t, "sd15-tiny/model")
	reg := catalog.New(map[string]string{"tiny": dir}, "", "")
	reg.Refresh()
	m, ok := reg.Get("tiny")
	if !ok {
		t.Fatalf("fixture model not registered: %v", reg.Problems())
	}
	return m
}

func TestGenerateWithFixtureModel(t *testing.T) {
	cache, _ := textcache.New(1 << 20)
	defer cache.Close()
	e, err := New("cpu", cache)
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.Load(context.Background(), fixtureModel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var steps []int
	previews := 0
	res, err := m.Generate(context.Background(), worker.Request{Prompt: "a red fox", NegativePrompt: "blurry",
		Width: 64, Height: 64, Steps: 3, N: 2, Guidance: 7, Sampler: "euler_a", Seed: 7},
		func(p worker.Progress) {
			steps = append(steps, p.Step)
			if p.Preview != nil {
				previews++
				if p.Preview.Bounds().Dx() != p.Preview.Bounds().Dy() {
					t.Errorf("preview %v is not one image", p.Preview.Bounds())
				}
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != 2 || res.Images[0].Bounds().Dx() != 64 || len(res.Seeds) != 2 || res.Seeds[1] != 8 {
		t.Fatalf("result: %d images, seeds %v", len(res.Images), res.Seeds)
	}
	if len(steps) != 3 || steps[2] != 3 || previews != 3 {
		t.Fatalf("progress steps %v, previews %d", steps, previews)
	}
	// Same seed, same image: generation is deterministic.
	again, err := m.Generate(context.Background(), worker.Request{Prompt: "a red fox", NegativePrompt: "blurry",
		Width: 64, Height: 64, Steps: 3, N: 1, Guidance: 7, Sampler: "euler_a", Seed: 7}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.Images[0].At(10, 20) != res.Images[0].At(10, 20) || again.Images[0].At(63, 1) != res.Images[0].At(63, 1) {
		t.Fatal("same seed gave a different image")
	}
	// Cancellation stops the sampler.
	ctx, cancel := context.WithCancel(context.Background())
	_, err = m.Generate(ctx, worker.Request{Prompt: "x", Width: 64, Height: 64, Steps: 50, N: 1, Guidance: 7, Seed: 1},
		func(p worker.Progress) {
			if p.Step == 2 {
				cancel()
			}
		})
	if err == nil {
		t.Fatal("canceled generation succeeded")
	}
}

func TestUnknownDeviceIsAnError(t *testing.T) {
	if _, err := New("tpu", nil); err == nil {
		t.Fatal("tpu accepted")
	}
}

func TestCacheHookSkipsRepeatedEncodings(t *testing.T) {
	cache, _ := textcache.New(1 << 20)
	defer cache.Close()
	var runs atomic.Int32
	encode := func(ctx context.Context, text string, opts conditioning.Options) (conditioning.Result, error) {
		runs.Add(1)
		return conditioning.Result{Hidden: []float32{float32(len(text)), 2}, Length: 1, Dim: 2}, nil
	}
	hook := CacheHook(cache, "enc1")
	opts := conditioning.Options{Emphasis: true, LongPrompts: true}
	for i := 0; i < 4; i++ {
		r, err := hook(context.Background(), "lowres, bad anatomy", opts, encode)
		if err != nil || r.Hidden[0] != 19 {
			t.Fatalf("hook: %v %v", r, err)
		}
		r.Hidden[0] = -1 // callers may modify what they get
	}
	if runs.Load() != 1 {
		t.Fatalf("encoder ran %d times for one negative prompt", runs.Load())
	}
	hook(context.Background(), "lowres, bad anatomy", conditioning.Options{ClipSkip: 2, Emphasis: true, LongPrompts: true}, encode)
	hook(context.Background(), "lowres, bad anatomy", conditioning.Options{Emphasis: false, LongPrompts: true}, encode)
	CacheHook(cache, "enc2")(context.Background(), "lowres, bad anatomy", opts, encode)
	if runs.Load() != 4 {
		t.Fatalf("encoder ran %d times, want 4 (clip skip, emphasis and encoder are part of the key)", runs.Load())
	}
}

// TestPipelineUsesTextCache checks the wiring end to end: with the hook in
// place, a repeated negative prompt is answered from the cache.
func TestPipelineUsesTextCache(t *testing.T) {
	cache, _ := textcache.New(1 << 20)
	defer cache.Close()
	e, _ := New("cpu", cache)
	wm, err := e.Load(context.Background(), fixtureModel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer wm.Close()
	m := wm.(*Model)
	if !m.TextCacheActive() {
		t.Fatal("the pipeline does not take the encode hook: the text-encoder cache is not wired into generation")
	}
	req := worker.Request{Prompt: "a", NegativePrompt: "ugly", Width: 64, Height: 64, Steps: 1, N: 1, Guidance: 5, Seed: 1}
	first, err := m.Generate(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	h0, m0, _ := cache.Stats()
	req.Prompt = "b"
	if _, err := m.Generate(context.Background(), req, nil); err != nil {
		t.Fatal(err)
	}
	h1, m1, _ := cache.Stats()
	if h1-h0 != 1 || m1-m0 != 1 {
		t.Fatalf("second job: %d hits, %d misses; want the negative prompt to hit and the new prompt to miss", h1-h0, m1-m0)
	}
	req.Prompt = "a"
	again, err := m.Generate(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.Images[0].At(5, 5) != first.Images[0].At(5, 5) {
		t.Fatal("cached conditioning changed the image")
	}
}

// TestGenerateBatchMatchesGenerate runs three requests as one batch
// through the engine and checks each image against the request run alone,
// and that a canceled item fails alone.
func TestGenerateBatchMatchesGenerate(t *testing.T) {
	e, _ := New("cpu", nil)
	wm, err := e.Load(context.Background(), fixtureModel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer wm.Close()
	m := wm.(*Model)
	reqs := []worker.Request{
		{Prompt: "a red circle", NegativePrompt: "blurry", Width: 64, Height: 64, Steps: 3, N: 1, Guidance: 6, Sampler: "euler_a", Seed: 11},
		{Prompt: "a (blue:1.3) square", NegativePrompt: "blurry", Width: 64, Height: 64, Steps: 3, N: 2, Guidance: 6, Sampler: "euler_a", Seed: 12},
		{Prompt: "a green triangle", Width: 64, Height: 64, Steps: 3, N: 1, Guidance: 6, Sampler: "euler_a", Seed: 13},
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	items := []worker.BatchItem{{Ctx: context.Background(), Request: reqs[0]}, {Ctx: context.Background(), Request: reqs[1]},
		{Ctx: context.Background(), Request: reqs[2]}, {Ctx: canceled, Request: reqs[0]}}
	var batchSizes []int
	res := m.GenerateBatch(context.Background(), items, func(i int, p worker.Progress) {
		if i == 0 {
			batchSizes = append(batchSizes, p.Batch)
		}
		if p.Preview == nil || p.Preview.Bounds().Dx() != p.Preview.Bounds().Dy() {
			t.Errorf("item %d: preview is not one image", i)
		}
	})
	if len(res) != 4 || res[3].Err == nil {
		t.Fatalf("canceled item: %+v", res)
	}
	if fmt.Sprint(batchSizes) != "[4 4 4]" {
		t.Fatalf("evaluations ran %v images; want the batch's 4 each step", batchSizes)
	}
	for k, req := range reqs {
		if res[k].Err != nil {
			t.Fatal(res[k].Err)
		}
		alone, err := m.Generate(context.Background(), req, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(res[k].Result.Images) != req.N || fmt.Sprint(res[k].Result.Seeds) != fmt.Sprint(alone.Seeds) {
			t.Fatalf("item %d: %d images, seeds %v vs %v", k, len(res[k].Result.Images), res[k].Result.Seeds, alone.Seeds)
		}
		for i, im := range res[k].Result.Images {
			a, b := im.(*image.RGBA), alone.Images[i].(*image.RGBA)
			// float32 noise may move a value across an 8-bit rounding edge
			for p := range a.Pix {
				if d := int(a.Pix[p]) - int(b.Pix[p]); d > 1 || d < -1 {
					t.Fatalf("item %d image %d differs from the request run alone at byte %d: %d vs %d", k, i, p, a.Pix[p], b.Pix[p])
				}
			}
		}
	}
}

var (
	_ modelcache.Offloader = (*Model)(nil)
	_ modelcache.Restorer  = (*Model)(nil)
	_ modelcache.Sizer     = (*Model)(nil)
)

func TestComponentHashesAreCachedBesideTheModel(t *testing.T) {
	fm := fixtureModel(t)
	plain, _ := New("cpu", nil)
	m0, err := plain.Load(context.Background(), fm)
	if err != nil {
		t.Fatal(err)
	}
	defer m0.Close()
	want := m0.(*Model).Components()
	if len(want) != 3 || want[0].Kind != KindTextEncoder || want[0].Hash != m0.(*Model).EncoderHash() || want[1].Hash == want[2].Hash {
		t.Fatalf("components %+v", want)
	}
	for _, c := range want {
		if c.Bytes <= 0 || !strings.HasPrefix(c.Hash, "xxh64:") {
			t.Fatalf("component %+v", c)
		}
	}
	if got := m0.(*Model).DeviceBytes(); got != want[0].Bytes+want[1].Bytes+want[2].Bytes {
		t.Fatalf("device bytes %d", got)
	}
	// The CPU backend cannot offload: the cache drops such models.
	if err := m0.(*Model).Offload(); err == nil {
		t.Fatal("CPU model offloaded")
	}

	dir := t.TempDir()
	e, _ := New("cpu", nil)
	e.SetStateDir(dir)
	m1, err := e.Load(context.Background(), fm)
	if err != nil {
		t.Fatal(err)
	}
	m1.Close()
	if got := m1.(*Model).Components(); !reflect.DeepEqual(got, want) {
		t.Fatalf("with a state dir: %+v", got)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "hashes", "*.json"))
	if len(files) != 1 {
		t.Fatalf("hash cache files %v", files)
	}
	if got, ok := e.KnownComponents(fm.Path); !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("known components %+v %v", got, ok)
	}
	if _, ok := plain.KnownComponents(fm.Path); ok {
		t.Fatal("components known without a state dir")
	}
	// The next load reads the cache (a planted hash shows it) ...
	raw, _ := os.ReadFile(files[0])
	var hf hashFile
	json.Unmarshal(raw, &hf)
	hf.Hashes[KindVAE] = "xxh64:planted"
	raw, _ = json.Marshal(hf)
	os.WriteFile(files[0], raw, 0o644)
	m2, err := e.Load(context.Background(), fm)
	if err != nil {
		t.Fatal(err)
	}
	m2.Close()
	if got := m2.(*Model).Components()[2].Hash; got != "xxh64:planted" {
		t.Fatalf("cache not used: vae hash %s", got)
	}
	// ... unless the model's files changed (another fingerprint).
	hf.Fingerprint = "0000000000000000"
	raw, _ = json.Marshal(hf)
	os.WriteFile(files[0], raw, 0o644)
	m3, err := e.Load(context.Background(), fm)
	if err != nil {
		t.Fatal(err)
	}
	m3.Close()
	if got := m3.(*Model).Components()[2].Hash; got != want[2].Hash {
		t.Fatalf("stale cache used: vae hash %s", got)
	}
	if _, ok := e.KnownComponents(t.TempDir()); ok {
		t.Fatal("components known for a model never loaded")
	}
}

// TestGenerateHires checks that a worker request's hires settings reach
// the pipeline: the images come out at the hires size.
func TestGenerateHires(t *testing.T) {
	cache, _ := textcache.New(1 << 20)
	defer cache.Close()
	e, err := New("cpu", cache)
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.Load(context.Background(), fixtureModel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	res, err := m.Generate(context.Background(), worker.Request{Prompt: "a red fox", Width: 64, Height: 64, Steps: 2, N: 1,
		Guidance: 5, Sampler: "euler", Seed: 7, Hires: &jobs.Hires{Scale: 1.5, Upscaler: "lanczos", Steps: 2, Denoise: 0.5}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b := res.Images[0].Bounds(); b.Dx() != 96 || b.Dy() != 96 {
		t.Fatalf("hires image %v, want 96×96", b)
	}
}

// TestRequestCarriesSecondPrompts: SDXL's prompt_2 and negative_prompt_2
// reach the pipeline (which hands them to the second text encoder).
func TestRequestCarriesSecondPrompts(t *testing.T) {
	got := request(worker.Request{Prompt: "p", NegativePrompt: "n", Prompt2: "p2", NegativePrompt2: "n2", N: 1})
	if got.Prompt2 != "p2" || got.NegativePrompt2 != "n2" || got.Prompt != "p" || got.NegativePrompt != "n" {
		t.Fatalf("pipeline request %+v", got)
	}
}
