package main

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/kiln-project/kiln/core/family"
	"github.com/kiln-project/kiln/core/model/qwenimage"
	"github.com/kiln-project/kiln/core/model/qwenimage/qitest"
	"github.com/kiln-project/kiln/core/pipeline"
	"github.com/kiln-project/kiln/internal/fixtures"
)

// TestGenerateQwenImage: `kiln generate --model <tiny Qwen-Image folder>`
// with true CFG and a negative prompt reproduces diffusers'
// QwenImagePipeline latents (the committed fixture).
func TestGenerateQwenImage(t *testing.T) {
	model := filepath.Join(qitest.Dir(), "pipe")
	out := filepath.Join(t.TempDir(), "out.safetensors")
	var stdout, stderr bytes.Buffer
	code := runMain(context.Background(), []string{"generate", "--model", model, "--prompt", "A red fox sitting in the snow, 4k photo",
		"--negative-prompt", "blurry, low quality", "--guidance", "4", "--steps", "4", "--seed", "42", "--width", "48", "--height", "64",
		"--device", "cpu", "--save-latents", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	got, shape := readF32(t, out, "latents")
	if len(shape) != 4 || shape[1] != 4 || shape[2] != 8 || shape[3] != 6 {
		t.Fatalf("latents shape %v", shape)
	}
	want, _ := readF32(t, filepath.Join(qitest.Dir(), "refs.safetensors"), "pipe.t2i_cfg.latents")
	if e := fixtures.RelErr(qwenimage.Pack(got, 1, 4, 8, 6, 2), want); e > 1e-3 {
		t.Fatalf("latents rel err %g", e)
	}
}

// TestFamilyDefaultsReplaceTheProfiles: a family's steps, guidance and own
// sampler replace the profile's unless the flag was given.
func TestFamilyDefaultsReplaceTheProfiles(t *testing.T) {
	d := family.Defaults{Steps: 50, GuidanceScale: 4, Sampler: "flowmatch_euler"}
	req := pipeline.Request{Steps: 25, Guidance: 7, Sampler: "euler_a"}
	familyDefaults(&req, d, map[string]bool{})
	if req.Steps != 50 || req.Guidance != 4 || req.Sampler != "" {
		t.Fatalf("unset flags: %+v", req)
	}
	req = pipeline.Request{Steps: 8, Guidance: 2, Sampler: "euler"}
	familyDefaults(&req, d, map[string]bool{"steps": true, "guidance": true, "sampler": true})
	if req.Steps != 8 || req.Guidance != 2 || req.Sampler != "euler" {
		t.Fatalf("given flags: %+v", req)
	}
	req = pipeline.Request{Steps: 25, Guidance: 7, Sampler: "euler_a"}
	familyDefaults(&req, family.Defaults{}, map[string]bool{})
	if req.Steps != 25 || req.Guidance != 7 || req.Sampler != "euler_a" {
		t.Fatalf("a family without defaults: %+v", req)
	}
}
