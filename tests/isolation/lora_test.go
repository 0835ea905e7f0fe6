package isolation_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kiln-project/kiln/core/safetensors"
)

// TestTenantLoRAs: a tenant's uploaded LoRA is checked against the model,
// runs in that tenant's jobs (loras field and prompt tag) and in no other
// tenant's, and is gone after DELETE.
func TestTenantLoRAs(t *testing.T) {
	c, _, a, keys := setup(t) // setup uploaded A's LoRA
	job := func(key string, extra map[string]any) reply {
		m := map[string]any{"prompt": "a cat", "width": 64, "height": 64, "steps": 1}
		for k, v := range extra {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return c.do("POST", "/v1/jobs", bearer(key), b)
	}
	wait := func(r reply) map[string]any {
		t.Helper()
		var j map[string]any
		json.Unmarshal(r.body, &j)
		deadline := time.Now().Add(120 * time.Second)
		for {
			r := c.do("GET", "/v1/jobs/"+j["id"].(string), bearer(a.key), nil)
			json.Unmarshal(r.body, &j)
			if j["status"] == "succeeded" || j["status"] == "failed" || time.Now().After(deadline) {
				return j
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, extra := range []map[string]any{
		{"loras": []map[string]any{{"name": a.lora, "weight": 0.8}}},
		{"prompt": "a cat <lora:" + a.lora + ":0.5>"},
	} {
		r := job(a.key, extra)
		if r.status != http.StatusAccepted {
			t.Fatalf("A's job with its LoRA: %d %s", r.status, r.body)
		}
		if j := wait(r); j["status"] != "succeeded" || !strings.Contains(string(mustJSON(j["params"])), a.lora) {
			t.Fatalf("A's job with its LoRA: %v", j)
		}
	}
	if r := job(keys["tenant-b"], map[string]any{"loras": []map[string]any{{"name": a.lora}}}); r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "unknown LoRA") {
		t.Fatalf("B used A's LoRA: %d %s", r.status, r.body)
	}
	put := func(name string, body []byte) reply {
		return c.do("PUT", "/v1/loras/"+name+"?model=tiny", bearer(a.key), body)
	}
	if r := put("pick", append([]byte{0x80, 0x04, 0x95}, make([]byte, 64)...)); r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "pickle") {
		t.Fatalf("pickle: %d %s", r.status, r.body)
	}
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, []safetensors.WriteTensor{
		safetensors.F32Tensor("lora_unet_no_such_block.lora_down.weight", []int{1, 4}, make([]float32, 4)),
		safetensors.F32Tensor("lora_unet_no_such_block.lora_up.weight", []int{4, 1}, make([]float32, 4)),
	}, nil); err != nil {
		t.Fatal(err)
	}
	if r := put("mismatch", buf.Bytes()); r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "lora_unet_no_such_block.lora_down.weight") {
		t.Fatalf("mismatching key: %d %s", r.status, r.body)
	}
	if r := c.do("PUT", "/v1/loras/x?model=nope", bearer(a.key), buf.Bytes()); r.status != http.StatusBadRequest {
		t.Fatalf("unknown model: %d %s", r.status, r.body)
	}
	var list struct{ Data []struct{ Name string } }
	json.Unmarshal(c.do("GET", "/v1/loras", bearer(a.key), nil).body, &list)
	if len(list.Data) != 1 || list.Data[0].Name != a.lora {
		t.Fatalf("refused uploads listed: %+v", list)
	}
	if r := c.do("DELETE", "/v1/loras/"+a.lora, bearer(a.key), nil); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := job(a.key, map[string]any{"loras": []map[string]any{{"name": a.lora}}}); r.status != http.StatusBadRequest {
		t.Fatalf("deleted LoRA still usable: %d %s", r.status, r.body)
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
