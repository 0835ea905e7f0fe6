package comfyui

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func graph(t *testing.T, s string) Graph {
	t.Helper()
	var g Graph
	if err := json.Unmarshal([]byte(s), &g); err != nil {
		t.Fatal(err)
	}
	return g
}

const advanced = `{
 "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "models/sd15.safetensors"}},
 "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": "x.safetensors", "strength_model": %s, "strength_clip": 0}},
 "3": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["2", 1], "stop_at_clip_layer": -2}},
 "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["3", 0]}},
 "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["3", 0]}},
 "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 3}},
 "7": {"class_type": "LatentUpscale", "inputs": {"samples": ["6", 0], "upscale_method": "nearest-exact", "width": 768, "height": 512, "crop": "disabled"}},
 "8": {"class_type": "KSamplerAdvanced", "inputs": {"model": ["2", 0], "add_noise": "enable", "noise_seed": 123456789012, "steps": 25, "cfg": 6.5,
   "sampler_name": "dpmpp_2m", "scheduler": "karras", "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["7", 0],
   "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable"}},
 "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
 "10": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}}
}`

func resolve(name string) (string, error) {
	if strings.HasSuffix(name, "sd15.safetensors") {
		return "sd15", nil
	}
	return "", fmt.Errorf("unknown %q", name)
}

func TestCompileAdvancedGraph(t *testing.T) {
	plans, err := compile(graph(t, fmt.Sprintf(advanced, "0")), nodeDefs([]string{"sd15"}), resolve)
	if err != nil {
		t.Fatal(err)
	}
	if len(plans) != 1 {
		t.Fatalf("%d plans", len(plans))
	}
	p := plans[0]
	r := p.req
	if p.output != "10" || p.sampler != "8" || r.Model != "sd15" || r.Prompt != "a cat" || *r.Seed != 123456789012 || *r.Steps != 25 ||
		*r.Guidance != 6.5 || r.Sampler != "dpmpp_2m_karras" || *r.N != 3 || !r.SharedNoise || *r.ClipSkip != 2 ||
		*r.Width != 768 || *r.Height != 512 || r.Strength != nil {
		t.Fatalf("plan %+v / %+v", p, r)
	}
}

func TestCompileRefusals(t *testing.T) {
	defs := nodeDefs([]string{"sd15"})
	for _, c := range []struct {
		graph, node, input string
	}{
		{fmt.Sprintf(advanced, "0.8"), "2", "lora_name"},
		{strings.Replace(fmt.Sprintf(advanced, "0"), `"return_with_leftover_noise": "disable"`, `"return_with_leftover_noise": "enable"`, 1), "8", "return_with_leftover_noise"},
		{strings.Replace(fmt.Sprintf(advanced, "0"), `"samples": ["6", 0]`, `"samples": ["8", 0]`, 1), "8", ""}, // a cycle
		{strings.Replace(fmt.Sprintf(advanced, "0"), `"scheduler": "karras"`, `"scheduler": "exponential"`, 1), "8", "sampler_name"},
		{strings.Replace(fmt.Sprintf(advanced, "0"), `"noise_seed": 123456789012`, `"noise_seed": 18446744073709551615`, 1), "8", "noise_seed"},
		{strings.Replace(fmt.Sprintf(advanced, "0"), `"clip": ["3", 0]}}`, `"clip": ["33", 0]}}`, 1), "4", "clip"},
	} {
		_, err := compile(graph(t, c.graph), defs, resolve)
		if err == nil || err.node != c.node || (c.input != "" && err.input != c.input) {
			t.Errorf("want an error at node %s input %q, got %v", c.node, c.input, err)
		}
	}
}
