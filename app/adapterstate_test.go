package app_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/kiln-project/kiln/server/config"
)

// TestAdapterStateSurvivesRestart: A1111 options and the ComfyUI history
// set before a restart are there after it (per tenant), and new prompts
// number after the old ones.
func TestAdapterStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	sameDir := func(c *config.Config) { c.DataDir = dir }
	s := startServer(t, sameDir)
	if r := s.do("POST", "/sdapi/v1/options", "", map[string]any{"CLIP_stop_at_last_layers": 2}); r.status != http.StatusOK {
		t.Fatalf("options: %d %s", r.status, r.body)
	}
	entry := s.comfyRun("", comfyGraph("a lantern", 3, 1, 2))
	id := entry["prompt"].([]any)[1].(string)
	number := entry["prompt"].([]any)[0].(float64)
	image := entry["outputs"].(map[string]any)["9"].(map[string]any)["images"].([]any)[0].(map[string]any)["filename"]
	if err := s.in.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}

	s = startServer(t, sameDir)
	if o := s.do("GET", "/sdapi/v1/options", "", nil).json(t); o["CLIP_stop_at_last_layers"] != 2.0 {
		t.Fatalf("options after a restart: %v", o)
	}
	h := s.do("GET", "/history/"+id, "", nil).json(t)
	e, ok := h[id].(map[string]any)
	if !ok {
		t.Fatalf("history after a restart: %v", h)
	}
	st := e["status"].(map[string]any)
	got := e["outputs"].(map[string]any)["9"].(map[string]any)["images"].([]any)[0].(map[string]any)["filename"]
	if st["status_str"] != "success" || st["completed"] != true || got != image || e["prompt"].([]any)[2] == nil {
		t.Fatalf("history entry after a restart: %v", e)
	}
	if all := s.do("GET", "/history", "", nil).json(t); all[id] == nil {
		t.Fatalf("GET /history after a restart lacks %s: %v", id, all)
	}
	if r := s.do("GET", "/view?filename="+image.(string), "", nil); r.status != http.StatusOK {
		t.Fatalf("the image of a restored entry: %d", r.status)
	}
	next := s.comfyRun("", comfyGraph("a lantern", 4, 1, 2))
	if n := next["prompt"].([]any)[0].(float64); n <= number {
		t.Fatalf("a new prompt is number %v, the restored one %v", n, number)
	}
	// another tenant sees neither
	key := s.tenant("acme", nil)
	if o := s.do("GET", "/sdapi/v1/options", key, nil).json(t); o["CLIP_stop_at_last_layers"] != 1.0 {
		t.Fatalf("another tenant's options: %v", o)
	}
	if h := s.do("GET", "/history", key, nil).json(t); len(h) != 0 {
		t.Fatalf("another tenant's history: %v", h)
	}
}
