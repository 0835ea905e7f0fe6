package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/internal/fixtures"
)

func TestDoctorAndBenchCheck(t *testing.T) {
	for _, args := range [][]string{{"doctor"}, {"bench", "--check"}} {
		var out, errb bytes.Buffer
		if code := runMain(context.Background(), args, &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errb.String())
		}
		if !strings.Contains(out.String(), "verdict") || !strings.Contains(out.String(), "kernel image") {
			t.Fatalf("%v printed:\n%s", args, out.String())
		}
	}
}

func TestBenchBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--batch-sizes", "x"},
		{"bench", "--batch-sizes", "0"},
		{"bench", "--steps", "0"},
		{"bench", "--device", "tpu"},
		{"bench", "--models", " , "},
		{"bench", "extra"},
		{"bench", "--steps", "1001"},
		{"bench", "--guidance", "31"},
		{"bench", "--guidance", "-1"},
		{"bench", "--size", "65"},
		{"bench", "--size", "8192"},
		{"bench", "--batch-sizes", "65"},
	} {
		var out, errb bytes.Buffer
		if code := runMain(context.Background(), args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
}

// TestBenchFixtureOnCPU runs `kiln bench` end to end on the fixture model.
func TestBenchFixtureOnCPU(t *testing.T) {
	model := fixtures.Require(t, "sd15-tiny/model")
	js := filepath.Join(t.TempDir(), "results.json")
	var out, errb bytes.Buffer
	args := []string{"bench", "--models", model, "--device", "cpu", "--batch-sizes", "1,2", "--steps", "2", "--iterations", "1", "--output", js}
	if code := runMain(context.Background(), args, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "img/s") {
		t.Fatalf("no table:\n%s", out.String())
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Results []struct {
			Batch           int     `json:"batch"`
			ImagesPerSecond float64 `json:"images_per_second"`
		} `json:"results"`
	}
	if err := json.Unmarshal(b, &rep); err != nil || len(rep.Results) != 2 || rep.Results[1].Batch != 2 || rep.Results[0].ImagesPerSecond <= 0 {
		t.Fatalf("results.json: %v %s", err, b)
	}
}
