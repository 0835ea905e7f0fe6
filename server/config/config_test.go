package config

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/kiln-project/kiln/configs"
)

func TestEveryFlagHasAKeyInKilnYAML(t *testing.T) {
	data, err := configs.FS.ReadFile("kiln.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]any
	if err := yaml.Unmarshal(data, &keys); err != nil {
		t.Fatal(err)
	}
	c, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	c.Bind(fs)
	n := 0
	for flagName, key := range FlagKeys(fs) {
		n++
		if _, ok := keys[key]; !ok {
			t.Errorf("flag --%s has no key %q in configs/kiln.yaml", flagName, key)
		}
	}
	if n < 30 {
		t.Fatalf("only %d flags bound", n)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestLoadLayersDefaultsFileAndFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "k.yaml")
	os.WriteFile(file, []byte("listen: 127.0.0.1:9000\nworkers: 3\nmemory_budget: 12GiB\nmodels:\n  a: /models/a\n"), 0o644)
	c, err := Load("serve", []string{"--config", file, "--workers", "2", "--model", "b=/models/b", "--ack-wait", "5s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9000" || c.Workers != 2 || c.MemoryBudget.Bytes != 12<<30 || c.AckWait.D() != 5*time.Second {
		t.Fatalf("config %+v", c)
	}
	if c.Models["a"] != "/models/a" || c.Models["b"] != "/models/b" {
		t.Fatalf("models %v", c.Models)
	}
	if c.DataDir != "./kiln-data" || c.Role != "all" {
		t.Fatalf("defaults lost: %q %q", c.DataDir, c.Role)
	}
}

func TestStrictDecoding(t *testing.T) {
	c, _ := Default()
	err := c.Merge([]byte("listen: 127.0.0.1:1\nlistne: x\n"))
	if err == nil || !strings.Contains(err.Error(), "listne") {
		t.Fatalf("unknown key: %v", err)
	}
	err = c.Merge([]byte("local_quota:\n  max_stepz: 3\n"))
	if err == nil || !strings.Contains(err.Error(), "max_stepz") {
		t.Fatalf("unknown nested key: %v", err)
	}
	for _, bad := range []string{"workers: many\n", "ack_wait: soon\n", "max_body_bytes: 12 parsecs\n", "memory_budget: 140%\n", "a: 1\n---\nb: 2\n"} {
		c, _ := Default()
		if err := c.Merge([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("role: chef\n"), 0o644)
	if _, err := Load("serve", []string{"--config", filepath.Join(dir, "bad.yaml")}, io.Discard); err == nil || !strings.Contains(err.Error(), "role") {
		t.Fatalf("invalid role: %v", err)
	}
	if _, err := Load("serve", []string{"--listen", "nope"}, io.Discard); err == nil {
		t.Fatal("bad listen accepted")
	}
	if _, err := Load("serve", []string{"--model", "bad name=/x"}, io.Discard); err == nil {
		t.Fatal("bad model name accepted")
	}
	if _, err := Load("serve", []string{"extra"}, io.Discard); err == nil {
		t.Fatal("positional argument accepted")
	}
}

func TestUnits(t *testing.T) {
	for in, want := range map[string]ByteSize{"16MiB": 16 << 20, "1GB": 1e9, "512": 512, "1.5KiB": 1536, "2TiB": 2 << 40} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("%s: %d %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "x1"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if s := ByteSize(12 << 30).String(); s != "12GiB" {
		t.Errorf("String %s", s)
	}
	if s := ByteSize(12667813 << 10).Human(); s != "12.1GiB" {
		t.Errorf("Human %s", s)
	}
	b, _ := ParseBudget("80%")
	if got := b.Resolve(1000, Budget{}); got != 800 {
		t.Errorf("80%% of 1000 = %d", got)
	}
	auto, _ := ParseBudget("auto")
	if got := auto.Resolve(1000, Budget{Percent: 50}); got != 500 {
		t.Errorf("auto with a 50%% profile = %d", got)
	}
	if got := auto.Resolve(1000, Budget{Auto: true}); got != 800 {
		t.Errorf("auto without profile = %d", got)
	}
	abs, _ := ParseBudget("2GiB")
	if abs.Resolve(1000, Budget{}) != 2<<30 || abs.String() != "2GiB" {
		t.Errorf("absolute budget %v", abs)
	}
}

func TestProfiles(t *testing.T) {
	ps, err := Profiles()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"speed_first", "balanced", "quality_first"} {
		p, ok := ps[name]
		if !ok {
			t.Fatalf("profile %s missing", name)
		}
		if p.Steps <= 0 || p.MaxBatch <= 0 {
			t.Fatalf("profile %+v", p)
		}
	}
	if !(ps["speed_first"].Steps < ps["balanced"].Steps && ps["balanced"].Steps < ps["quality_first"].Steps) {
		t.Fatal("profiles do not order steps by quality")
	}
}

func TestHardwareMatching(t *testing.T) {
	hw, err := HardwareProfiles()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		mem  int64
		want string
	}{
		{"", 64 << 30, "cpu"},
		{"NVIDIA H100 80GB HBM3", 80 << 30, "h100-80gb"},
		{"NVIDIA A100-SXM4-40GB", 40 << 30, "a100-40gb"},
		{"NVIDIA A100-SXM4-80GB", 80 << 30, "a100-80gb"},
		{"NVIDIA GeForce RTX 4090", 24 << 30, "rtx-4090"},
		{"Tesla T4", 16 << 30, "generic-gpu"},
	} {
		h, ok := MatchHardware(hw, c.name, c.mem)
		if !ok || h.Name != c.want {
			t.Errorf("%q %d GiB: %s, want %s", c.name, c.mem>>30, h.Name, c.want)
		}
	}
}

func FuzzMerge(f *testing.F) {
	data, _ := configs.FS.ReadFile("kiln.yaml")
	f.Add(data)
	f.Add([]byte("memory_budget: 80%\nworkers: 2\n"))
	f.Add([]byte("local_quota: {max_n: 2}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Default()
		if err != nil {
			t.Fatal(err)
		}
		if c.Merge(b) == nil {
			_ = c.Validate() // must not panic
		}
	})
}

func TestDeviceValues(t *testing.T) {
	for d, ok := range map[string]bool{"auto": true, "cpu": true, "cuda": true, "cuda:0": true, "cuda:12": true,
		"gpu": false, "cuda:": false, "cuda:x": false, "cuda:-1": false, "CUDA": false, "": false, "cuda:123456": false} {
		c, err := Default()
		if err != nil {
			t.Fatal(err)
		}
		c.Device = d
		if err := c.Validate(); (err == nil) != ok {
			t.Errorf("device %q: %v", d, err)
		}
	}
}

// TestMergeBoundsWork: inputs that made the YAML decoder's work grow
// quadratically (thousands of repeated or distinct keys in one mapping)
// or multiply (aliases) are refused from the node tree before decoding
// (issue 24, the FuzzMerge stall).
func TestMergeBoundsWork(t *testing.T) {
	var distinct strings.Builder
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(&distinct, "k%d: 1\n", i)
	}
	for name, c := range map[string]struct{ in, want string }{
		"repeated keys": {strings.Repeat("workers: 1\n", 500), "already defined"},
		"distinct keys": {distinct.String(), "a mapping of 5000 keys"},
		"alias":         {"local_quota: &q {max_n: 2}\ndefault_quota: *q\n", "anchors and aliases"},
		"too large":     {"#" + strings.Repeat("x", 2<<20), "the limit is"},
		"too many":      {"cors_origins: [" + strings.Repeat("a,", 30000) + "]", "YAML nodes"},
	} {
		cfg, err := Default()
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Merge([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestDurationJSONIsSeconds(t *testing.T) {
	b, err := json.Marshal(struct{ D Duration }{Duration(2500 * time.Millisecond)})
	if err != nil || string(b) != `{"D":2.5}` {
		t.Fatalf("marshal: %s %v", b, err)
	}
	for in, want := range map[string]time.Duration{`1.5`: 1500 * time.Millisecond, `"30s"`: 30 * time.Second} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err != nil || d.D() != want {
			t.Errorf("unmarshal %s: %v %v", in, d, err)
		}
	}
	var d Duration
	if json.Unmarshal([]byte(`-1`), &d) == nil || json.Unmarshal([]byte(`"x"`), &d) == nil {
		t.Error("bad durations accepted")
	}
}
