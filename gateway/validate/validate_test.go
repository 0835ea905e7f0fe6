package validate

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/server/jobs"
)

func setup(t testing.TB) (*Validator, *catalog.Registry, string) {
	t.Helper()
	dir := t.TempDir()
	mk := func(name string) {
		os.MkdirAll(filepath.Join(dir, name), 0o755)
		os.WriteFile(filepath.Join(dir, name, "model_index.json"), []byte("{}"), 0o644)
	}
	mk("alpha")
	reg := catalog.New(nil, dir, "")
	reg.Refresh()
	profiles, err := config.Profiles()
	if err != nil {
		t.Fatal(err)
	}
	v, err := New(reg, profiles, "balanced", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v, reg, dir
}

func principal(version, maxSteps int) auth.Principal {
	return auth.Principal{Tenant: "acme", QuotaVersion: version,
		Quota: config.Quota{ConcurrentJobs: 1, ImagesPerMinute: 10, MaxPixels: 1 << 20, MaxSteps: maxSteps, MaxN: 4}}
}

func intp(v int) *int { return &v }

func TestDefaultsFromProfile(t *testing.T) {
	v, _, _ := setup(t)
	p, err := v.Plan(principal(1, 60), &JobRequest{Prompt: "x"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if p.Model != "alpha" || p.Profile != "balanced" || p.Steps != 25 || p.Sampler != "euler_a" || p.Width != 512 || p.N != 1 || p.Priority != "normal" {
		t.Fatalf("defaults %+v", p)
	}
	if p.Seed >= 1<<32 {
		t.Fatalf("random seed %d not below 2^32", p.Seed)
	}
	p2, _ := v.Plan(principal(1, 60), &JobRequest{Prompt: "x", Profile: "speed_first"}, false)
	if p2.Steps != 12 || p2.Sampler != "dpmpp_2m_karras" {
		t.Fatalf("speed_first %+v", p2)
	}
}

func waitHits(v *Validator, want uint64) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if h, _, _ := v.Stats(); h >= want {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

func TestPlanCacheKeysOnQuotaAndModels(t *testing.T) {
	v, reg, dir := setup(t)
	req := func() *JobRequest { return &JobRequest{Prompt: "x", Steps: intp(50)} }
	if _, err := v.Plan(principal(1, 60), req(), false); err != nil {
		t.Fatal(err)
	}
	v.cache.Wait()
	if _, err := v.Plan(principal(1, 60), req(), false); err != nil {
		t.Fatal(err)
	}
	if !waitHits(v, 1) {
		t.Fatal("identical request shape missed the cache")
	}
	// The quota shrinks: a new version, a new key, and the new limit applies.
	if _, err := v.Plan(principal(2, 40), req(), false); err == nil || err.Field != "steps" {
		t.Fatalf("lowered quota not applied: %v", err)
	}
	// The model list changes: the cached plan for "model beta" must not be
	// reused after beta disappears.
	os.MkdirAll(filepath.Join(dir, "beta"), 0o755)
	os.WriteFile(filepath.Join(dir, "beta", "model_index.json"), []byte("{}"), 0o644)
	reg.Refresh()
	r := &JobRequest{Prompt: "x", Model: "beta"}
	if _, err := v.Plan(principal(1, 60), r, false); err != nil {
		t.Fatal(err)
	}
	v.cache.Wait()
	os.RemoveAll(filepath.Join(dir, "beta"))
	reg.Refresh()
	if _, err := v.Plan(principal(1, 60), &JobRequest{Prompt: "x", Model: "beta"}, false); err == nil || err.Field != "model" {
		t.Fatalf("removed model still accepted: %v", err)
	}
	// Per-request fields are never taken from the cache.
	seed := uint64(7)
	a, _ := v.Plan(principal(1, 60), &JobRequest{Prompt: "first", NegativePrompt: "n1", Seed: &seed}, false)
	v.cache.Wait()
	b, _ := v.Plan(principal(1, 60), &JobRequest{Prompt: "second", NegativePrompt: "n2"}, false)
	if a.Prompt != "first" || b.Prompt != "second" || b.NegativePrompt != "n2" || a.Seed != 7 {
		t.Fatalf("per-request fields mixed up: %+v %+v", a, b)
	}
	if _, err := v.Plan(principal(1, 60), &JobRequest{Prompt: "x", Prompt2: "\xff"}, false); err == nil || err.Field != "prompt_2" {
		t.Fatalf("invalid prompt_2 accepted: %v", err)
	}
	if _, err := v.Plan(principal(1, 60), &JobRequest{Prompt: "x", NegativePrompt2: "y"}, false); err == nil || err.Field != "negative_prompt_2" {
		t.Fatalf("negative_prompt_2 for an SD model accepted: %v", err)
	}
}

func TestCheckLimits(t *testing.T) {
	v, _, _ := setup(t)
	p, _ := v.Plan(principal(1, 60), &JobRequest{Prompt: "x", Steps: intp(30)}, false)
	if err := v.CheckLimits(principal(1, 60), p); err != nil {
		t.Fatal(err)
	}
	p.Steps = 61
	if err := v.CheckLimits(principal(1, 60), p); err == nil || err.Field != "steps" {
		t.Fatalf("steps above limit: %v", err)
	}
}

// TestDefaultSizeIsTheModelsNative: without width and height a request
// gets the model's native size; the profile's size where the native one is
// unknown or over the profile's or tenant's pixel caps.
func TestDefaultSizeIsTheModelsNative(t *testing.T) {
	v, reg, dir := setup(t)
	mk := func(name, sampleSize string) {
		for _, sub := range []string{"unet", "vae", "scheduler", "text_encoder"} {
			os.MkdirAll(filepath.Join(dir, name, sub), 0o755)
		}
		// an SD folder as the SD family inspects it (configs only)
		os.WriteFile(filepath.Join(dir, name, "model_index.json"), []byte(`{"_class_name": "StableDiffusionPipeline"}`), 0o644)
		os.WriteFile(filepath.Join(dir, name, "scheduler", "scheduler_config.json"), []byte(`{}`), 0o644)
		os.WriteFile(filepath.Join(dir, name, "text_encoder", "config.json"), []byte(`{}`), 0o644)
		os.WriteFile(filepath.Join(dir, name, "unet", "config.json"), []byte(`{"sample_size":`+sampleSize+`}`), 0o644)
		os.WriteFile(filepath.Join(dir, name, "vae", "config.json"), []byte(`{"block_out_channels":[32,64,128,128]}`), 0o644)
	}
	mk("shapes", "16")    // 128×128
	mk("wide", "[64,96]") // 768×512
	mk("xl", "128")       // 1024×1024
	reg.Refresh()
	for _, c := range []struct {
		model, profile string
		width, height  *int
		maxPixels      int
		w, h           int
	}{
		{model: "shapes", w: 128, h: 128},
		{model: "wide", w: 768, h: 512},
		{model: "xl", w: 1024, h: 1024},                       // balanced allows 1024²
		{model: "xl", profile: "speed_first", w: 512, h: 512}, // over its max_pixels: the profile's size
		{model: "xl", maxPixels: 800 * 800, w: 512, h: 512},   // over the tenant's: the profile's size
		{model: "alpha", w: 512, h: 512},                      // unknown native size
		{model: "shapes", width: intp(256), w: 256, h: 128},   // a side given keeps the other's default
		{model: "shapes", width: intp(64), height: intp(72), w: 64, h: 72},
	} {
		pr := principal(1, 60)
		if c.maxPixels > 0 {
			// another quota is another version (plans are cached per version)
			pr = principal(1+c.maxPixels, 60)
			pr.Quota.MaxPixels = c.maxPixels
		}
		p, err := v.Plan(pr, &JobRequest{Prompt: "x", Model: c.model, Profile: c.profile, Width: c.width, Height: c.height}, false)
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if p.Width != c.w || p.Height != c.h {
			t.Errorf("%s (profile %q, max_pixels %d): %d×%d, want %d×%d", c.model, c.profile, c.maxPixels, p.Width, p.Height, c.w, c.h)
		}
	}
	// The default model's native size applies to requests that name none.
	reg2 := catalog.New(nil, dir, "shapes")
	reg2.Refresh()
	profiles, _ := config.Profiles()
	v2, _ := New(reg2, profiles, "balanced", 1<<20)
	defer v2.Close()
	if p, err := v2.Plan(principal(1, 60), &JobRequest{Prompt: "x"}, false); err != nil || p.Model != "shapes" || p.Width != 128 {
		t.Fatalf("default model: %+v %v", p, err)
	}
}

func TestFitNative(t *testing.T) {
	for _, c := range []struct{ w, h, nw, nh, ww, wh int }{
		{1024, 1024, 1024, 1024, 1024, 1024},
		{1792, 1024, 1024, 1024, 1344, 768},
		{1024, 1792, 1024, 1024, 768, 1344},
		{1536, 1024, 1024, 1024, 1216, 832},
		{1024, 1536, 1024, 1024, 832, 1216},
		{512, 512, 1024, 1024, 1024, 1024},
		{256, 256, 1024, 1024, 1024, 1024},
		{1024, 1024, 1536, 1536, 1536, 1536}, // a larger native area scales the buckets
		{1792, 1024, 512, 512, 1792, 1024},   // SD 1.x keeps the requested size
		{512, 512, 0, 0, 512, 512},           // native size unknown
	} {
		if w, h := FitNative(c.w, c.h, c.nw, c.nh); w != c.ww || h != c.wh {
			t.Errorf("FitNative(%d×%d, native %d×%d) = %d×%d, want %d×%d", c.w, c.h, c.nw, c.nh, w, h, c.ww, c.wh)
		}
	}
}

// TestPlanFitsOpenAISizes: a fitted size becomes the SDXL model's bucket;
// the same request without FitNative, or on a small model, keeps its size.
func TestPlanFitsOpenAISizes(t *testing.T) {
	v, reg, dir := setup(t)
	for name, sample := range map[string]string{"xl": "128", "shapes": "16"} {
		for _, sub := range []string{"unet", "vae", "scheduler", "text_encoder"} {
			os.MkdirAll(filepath.Join(dir, name, sub), 0o755)
		}
		// an SD folder as the SD family inspects it (configs only)
		os.WriteFile(filepath.Join(dir, name, "model_index.json"), []byte(`{"_class_name": "StableDiffusionPipeline"}`), 0o644)
		os.WriteFile(filepath.Join(dir, name, "scheduler", "scheduler_config.json"), []byte(`{}`), 0o644)
		os.WriteFile(filepath.Join(dir, name, "text_encoder", "config.json"), []byte(`{}`), 0o644)
		os.WriteFile(filepath.Join(dir, name, "unet", "config.json"), []byte(`{"sample_size":`+sample+`}`), 0o644)
		os.WriteFile(filepath.Join(dir, name, "vae", "config.json"), []byte(`{"block_out_channels":[32,64,128,128]}`), 0o644)
	}
	reg.Refresh()
	if m, _ := reg.Get("xl"); m.NativeWidth != 1024 {
		t.Fatalf("xl: %+v (problems %v)", m, reg.Problems())
	}
	pr := principal(1, 60)
	for _, c := range []struct {
		model string
		fit   bool
		w, h  int
	}{{"xl", true, 1344, 768}, {"xl", false, 1280, 720}, {"shapes", true, 1280, 720}} {
		p, err := v.Plan(pr, &JobRequest{Prompt: "x", Model: c.model, Width: intp(1280), Height: intp(720), FitNative: c.fit}, false)
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if p.Width != c.w || p.Height != c.h {
			t.Errorf("%+v: %d×%d", c, p.Width, p.Height)
		}
	}
}

// TestSetProfilesChangesPlans: a changed profile applies to the next plan
// of the same request shape (no stale cached plan), and the default
// profile cannot go away.
func TestSetProfilesChangesPlans(t *testing.T) {
	v, _, _ := setup(t)
	r := &JobRequest{Prompt: "x"}
	p, err := v.Plan(principal(1, 60), r, false)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // let the plan cache admit the plan
	profiles := map[string]config.Profile{}
	for k, pr := range v.Profiles() {
		profiles[k] = pr
	}
	b := profiles["balanced"]
	b.Steps = p.Steps - 5
	profiles["balanced"] = b
	if err := v.SetProfiles(profiles); err != nil {
		t.Fatal(err)
	}
	if p2, err := v.Plan(principal(1, 60), r, false); err != nil || p2.Steps != p.Steps-5 {
		t.Fatalf("after the change: steps %d (was %d), %v", p2.Steps, p.Steps, err)
	}
	delete(profiles, "balanced")
	if v.SetProfiles(profiles) == nil {
		t.Fatal("the default profile was removed")
	}
}

// TestMicroConditioning: micro-conditioning is accepted for SDXL models
// (the tiny fixture) and refused, naming the field, for others or out of
// range.
func TestMicroConditioning(t *testing.T) {
	xl, err := filepath.Abs("../../core/model/sdxl/testdata/base")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "plain"), 0o755)
	os.WriteFile(filepath.Join(dir, "plain", "model_index.json"), []byte("{}"), 0o644)
	reg := catalog.New(map[string]string{"xl": xl}, dir, "")
	reg.Refresh()
	profiles, _ := config.Profiles()
	v, err := New(reg, profiles, "balanced", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	mc := &jobs.Micro{OriginalWidth: 2048, OriginalHeight: 1536, CropTop: 32, AestheticScore: 6.5}
	p, perr := v.Plan(principal(1, 60), &JobRequest{Prompt: "x", Model: "xl", Micro: mc}, false)
	if perr != nil || p.Micro == nil || *p.Micro != *mc {
		t.Fatalf("sdxl: %+v %v", p.Micro, perr)
	}
	// prompt_2 / negative_prompt_2 reach the job of an SDXL model, per request.
	p, perr = v.Plan(principal(1, 60), &JobRequest{Prompt: "x", Model: "xl", Prompt2: "p2", NegativePrompt2: "n2"}, false)
	if perr != nil || p.Prompt2 != "p2" || p.NegativePrompt2 != "n2" {
		t.Fatalf("sdxl prompt_2: %+v %v", p, perr)
	}
	if p, _ = v.Plan(principal(1, 60), &JobRequest{Prompt: "x", Model: "xl"}, false); p.Prompt2 != "" {
		t.Fatalf("prompt_2 came from the plan cache: %q", p.Prompt2)
	}
	for _, c := range []struct {
		model string
		m     jobs.Micro
	}{{"plain", jobs.Micro{CropTop: 1}}, {"xl", jobs.Micro{CropTop: -1}}, {"xl", jobs.Micro{AestheticScore: 11}}} {
		if _, perr := v.Plan(principal(1, 60), &JobRequest{Prompt: "x", Model: c.model, Micro: &c.m}, false); perr == nil || perr.Field != "micro_conditioning" {
			t.Errorf("%s %+v: %v", c.model, c.m, perr)
		}
	}
}
