package app_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-project/kiln/core/imageio"
	"github.com/kiln-project/kiln/server/config"
)

// TestLoRAsOverHTTP installs a LoRA and an embedding in the models folder
// of a running server: GET /v1/loras and /v1/embeddings list them, a job
// naming the LoRA in its prompt runs with it (recorded with its hash, and
// in the PNG's parameters), and an unknown name is a 400 with close
// matches.
func TestLoRAsOverHTTP(t *testing.T) {
	models := t.TempDir()
	for kind, name := range map[string]string{"loras": "a", "embeddings": "kilnstyle"} {
		data, err := os.ReadFile(filepath.Join("../core/lora/testdata/sd15", name+".safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(models, kind), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(models, kind, name+".safetensors"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := startServer(t, func(c *config.Config) { c.ModelsDir = models })
	list := s.do("GET", "/v1/loras", "", nil)
	if list.status != http.StatusOK || !strings.Contains(string(list.body), `"name":"a"`) {
		t.Fatalf("GET /v1/loras: %d %s", list.status, list.body)
	}
	if e := s.do("GET", "/v1/embeddings", "", nil); !strings.Contains(string(e.body), `"name":"kilnstyle"`) {
		t.Fatalf("GET /v1/embeddings: %d %s", e.status, e.body)
	}
	// AUTOMATIC1111's routes list the same files
	if a := s.do("GET", "/sdapi/v1/loras", "", nil); a.status != http.StatusOK || !strings.Contains(string(a.body), `"name":"a"`) {
		t.Fatalf("GET /sdapi/v1/loras: %d %s", a.status, a.body)
	}
	if a := s.do("GET", "/sdapi/v1/embeddings", "", nil); !strings.Contains(string(a.body), `"kilnstyle":{`) || !strings.Contains(string(a.body), `"vectors":2`) {
		t.Fatalf("GET /sdapi/v1/embeddings: %d %s", a.status, a.body)
	}
	bad := s.do("POST", "/v1/jobs", "", map[string]any{"prompt": "x <lora:aa:1>", "model": "tiny"})
	if bad.status != http.StatusBadRequest || !strings.Contains(string(bad.body), `close matches: a`) {
		t.Fatalf("unknown LoRA: %d %s", bad.status, bad.body)
	}
	id := s.submit("", map[string]any{"prompt": "a kilnstyle circle <lora:a:0.7>", "model": "tiny", "width": 64, "height": 64,
		"steps": 2, "seed": 3, "sampler": "euler"})
	done := s.waitJob("", id, "succeeded", "failed")
	if done["status"] != "succeeded" {
		t.Fatalf("job: %v", done)
	}
	params := done["params"].(map[string]any)
	loras, _ := params["loras"].([]any)
	if len(loras) != 1 || loras[0].(map[string]any)["name"] != "a" || len(loras[0].(map[string]any)["hash"].(string)) != 64 {
		t.Fatalf("job loras: %v", params["loras"])
	}
	if embs, _ := params["embeddings"].([]any); len(embs) != 1 {
		t.Fatalf("job embeddings: %v", params["embeddings"])
	}
	hash := loras[0].(map[string]any)["hash"].(string)
	img := s.do("GET", done["images"].([]any)[0].(map[string]any)["url"].(string), "", nil)
	txt, err := imageio.ReadParameters(bytes.NewReader(img.body))
	if err != nil {
		t.Fatal(err)
	}
	if m := s.do("GET", "/metrics", "", nil); !strings.Contains(string(m.body), "kiln_lora_cache_entries{") {
		t.Errorf("metrics lack the LoRA cache")
	}
	if !strings.Contains(txt, `Lora hashes: "a: `+hash[:12]+`"`) || !strings.Contains(txt, `TI hashes: "kilnstyle: `) {
		t.Fatalf("parameters: %s", txt)
	}
}
