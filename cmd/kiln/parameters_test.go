package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/app"
	"github.com/kiln-project/kiln/core/imageio"
	"github.com/kiln-project/kiln/internal/fixtures"
	"github.com/kiln-project/kiln/server/config"
)

// TestCLIAndServerWriteTheSameParameters generates one image with kiln
// generate and the same settings through kiln serve, and compares the
// PNGs' "parameters" text: it must be identical, byte for byte.
func TestCLIAndServerWriteTheSameParameters(t *testing.T) {
	model := fixtures.Require(t, "sd15-tiny/model") // its folder is named "model", the name the CLI records
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir, cfg.Listen = t.TempDir(), "127.0.0.1:0"
	cfg.Models = map[string]string{"model": model}
	cfg.DefaultModel, cfg.BuiltinModel = "model", false
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	in, err := app.Start(ctx, app.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Stop(context.Background())
	base := "http://" + in.Addr()

	req := map[string]any{"prompt": "a red circle, (blue:1.2) square", "negative_prompt": "blurry", "steps": 3, "guidance": 5,
		"sampler": "dpmpp_2m_karras", "seed": 11, "width": 64, "height": 64, "clip_skip": 2}
	body, _ := json.Marshal(req)
	resp, err := http.Post(base+"/v1/jobs", "application/json", bytes.NewReader(body))
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %v %v", err, resp)
	}
	var job struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Images []struct {
			ID string `json:"id"`
		} `json:"images"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&job)
	resp.Body.Close()
	for job.Status != "succeeded" {
		if ctx.Err() != nil || job.Status == "failed" {
			t.Fatalf("job %s: %s", job.ID, job.Status)
		}
		time.Sleep(20 * time.Millisecond)
		r, err := http.Get(base + "/v1/jobs/" + job.ID)
		if err != nil {
			t.Fatal(err)
		}
		_ = json.NewDecoder(r.Body).Decode(&job)
		r.Body.Close()
	}
	r, err := http.Get(base + "/v1/images/" + job.Images[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	png, _ := io.ReadAll(r.Body)
	r.Body.Close()
	server, err := imageio.ReadParameters(bytes.NewReader(png))
	if err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(t.TempDir(), "cli.png")
	var stdout, stderr bytes.Buffer
	if code := runMain(context.Background(), []string{"generate", "--model", model, "--prompt", req["prompt"].(string),
		"--negative-prompt", "blurry", "--steps", "3", "--guidance", "5", "--sampler", "dpmpp_2m_karras", "--seed", "11",
		"--width", "64", "--height", "64", "--clip-skip", "2", "--device", "cpu", "--output", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("generate: exit %d: %s", code, stderr.String())
	}
	fh, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	cli, err := imageio.ReadParameters(fh)
	if err != nil {
		t.Fatal(err)
	}
	if cli != server {
		t.Fatalf("parameters differ\nCLI:    %q\nserver: %q", cli, server)
	}
	if !strings.Contains(cli, "Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5, Seed: 11, Size: 64x64, Model hash: ") ||
		!strings.Contains(cli, ", Model: model, Clip skip: 2, RNG: CPU, Version: kiln ") {
		t.Fatalf("parameters %q", cli)
	}
}
