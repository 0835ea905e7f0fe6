package sample

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// referenceSchedulers is reference.json's "schedulers" section.
type referenceScheduler struct {
	Class          string         `json:"class"`
	Config         map[string]any `json:"config"`
	InitNoiseSigma float64        `json:"init_noise_sigma"`
	Error          string         `json:"error"`
}

func loadReference(t *testing.T) (map[string]referenceScheduler, *safetensors.File) {
	t.Helper()
	jp := fixtures.Require(t, "sd15-tiny/reference.json")
	sp := fixtures.Require(t, "sd15-tiny/reference.safetensors")
	data, err := os.ReadFile(jp)
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Schedulers map[string]json.RawMessage `json:"schedulers"`
	}
	if err := json.Unmarshal(pythonJSON(data), &ref); err != nil {
		t.Fatal(err)
	}
	out := map[string]referenceScheduler{}
	for k, raw := range ref.Schedulers {
		var rs referenceScheduler
		if err := json.Unmarshal(raw, &rs); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		out[k] = rs
	}
	f, err := safetensors.Open(sp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return out, f
}

// float64s reads an F64 tensor at full precision.
func float64s(t *testing.T, f *safetensors.File, name string) []float64 {
	t.Helper()
	info, ok := f.Info(name)
	if !ok {
		t.Fatalf("fixture has no %s", name)
	}
	if info.DType != "F64" {
		t.Fatalf("%s: dtype %s", name, info.DType)
	}
	b, err := f.Bytes(name)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float64, len(b)/8)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out
}

func relErr64(got, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var d, m float64
	for i := range want {
		if math.IsNaN(got[i]) {
			return math.Inf(1)
		}
		d = math.Max(d, math.Abs(got[i]-want[i]))
		m = math.Max(m, math.Abs(want[i]))
	}
	if m == 0 {
		return d
	}
	return d / m
}

// configFromReference builds the Config that diffusers built the variant
// from: its resolved config with the class name.
func configFromReference(t *testing.T, rs referenceScheduler) *Config {
	t.Helper()
	m := map[string]any{"_class_name": rs.Class}
	for k, v := range rs.Config {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestScheduleTables checks every sched/<variant>/<steps> table of the
// fixture: timesteps and sigmas within 1e-6 relative error, and
// init_noise_sigma.
func TestScheduleTables(t *testing.T) {
	ref, f := loadReference(t)
	keys := make([]string, 0, len(ref))
	for k := range ref {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	worst := map[string]float64{}
	for _, key := range keys {
		rs := ref[key]
		parts := strings.Split(key, "/")
		variant := parts[0]
		var steps int
		fmt.Sscan(parts[1], &steps)
		cfg := configFromReference(t, rs)
		if rs.Error != "" {
			if _, err := New(cfg, "", steps, Options{}); err == nil {
				t.Errorf("%s: diffusers refused (%s) but New succeeded", key, rs.Error)
			}
			continue
		}
		s, err := New(cfg, "", steps, Options{})
		if err != nil {
			t.Errorf("%s: %v", key, err)
			continue
		}
		wantT := float64s(t, f, "sched/"+key+"/timesteps")
		if e := relErr64(s.Timesteps(), wantT); e >= 1e-6 {
			t.Errorf("%s: timesteps rel err %g\n got %v\nwant %v", key, e, s.Timesteps(), wantT)
		} else {
			worst[variant] = math.Max(worst[variant], e)
		}
		if _, ok := f.Info("sched/" + key + "/sigmas"); ok {
			wantS := float64s(t, f, "sched/"+key+"/sigmas")
			if e := relErr64(s.Sigmas(), wantS); e >= 1e-6 {
				t.Errorf("%s: sigmas rel err %g\n got %v\nwant %v", key, e, s.Sigmas(), wantS)
			} else {
				worst[variant] = math.Max(worst[variant], e)
			}
		} else if s.Sigmas() != nil {
			t.Errorf("%s: sampler has sigmas but diffusers has none", key)
		}
		if got := s.InitNoiseSigma(); math.Abs(got-rs.InitNoiseSigma) > 1e-6*math.Max(1, rs.InitNoiseSigma) {
			t.Errorf("%s: init_noise_sigma %v, want %v", key, got, rs.InitNoiseSigma)
		}
	}
	t.Logf("worst relative error per variant: %v", worst)
}

// TestResolvedConfigMatchesDiffusers builds each variant's class from the
// fixture's base settings (the SD 1.x keys, as the pipeline cases pass them)
// and compares the resolved configuration with the one diffusers reports.
func TestResolvedConfigMatchesDiffusers(t *testing.T) {
	ref, _ := loadReference(t)
	base := map[string]any{"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
		"num_train_timesteps": 1000, "steps_offset": 1, "clip_sample": false, "set_alpha_to_one": false,
		"prediction_type": "epsilon"}
	extra := map[string]map[string]any{
		"euler_karras":    {"use_karras_sigmas": true},
		"dpmpp_2m":        {"algorithm_type": "dpmsolver++", "solver_order": 2},
		"dpmpp_2m_karras": {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": true},
		"pndm":            {"skip_prk_steps": true},
	}
	for _, sp := range []string{"leading", "linspace", "trailing"} {
		extra["euler_"+sp] = map[string]any{"timestep_spacing": sp}
		extra["ddim_"+sp] = map[string]any{"timestep_spacing": sp}
	}
	for key, rs := range ref {
		if !strings.HasSuffix(key, "/4") {
			continue
		}
		variant := strings.TrimSuffix(key, "/4")
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra[variant] {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		cfg, err := ParseConfig(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := cfg.Resolved(rs.Class)
		if err != nil {
			t.Fatal(err)
		}
		for k, want := range rs.Config {
			if _, takes := classDefaults[classNames[rs.Class]][k]; !takes {
				continue // a key the class does not take, kept by diffusers as is
			}
			if !sameJSON(got[k], want) {
				t.Errorf("%s: %s = %v, diffusers has %v", variant, k, got[k], want)
			}
		}
		for k := range got {
			if _, ok := rs.Config[k]; !ok {
				t.Errorf("%s: resolved key %s that diffusers does not report", variant, k)
			}
		}
	}
}

// sameJSON compares two values after normalising numbers and lists.
func sameJSON(a, b any) bool {
	norm := func(v any) any {
		if f, ok := v.(float64); ok && math.IsInf(f, -1) {
			return "-Infinity"
		}
		bs, _ := json.Marshal(v)
		var out any
		json.Unmarshal(bs, &out)
		if s, ok := out.(string); ok && s == "-Infinity" {
			return s
		}
		return out
	}
	return reflect.DeepEqual(norm(a), norm(b))
}
