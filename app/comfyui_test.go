package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/kiln-project/kiln/server/config"
)

// comfyGraph is an API-format text-to-image workflow of ComfyUI's core
// nodes, as ComfyUI's "Save (API)" writes it.
func comfyGraph(prompt string, seed, batch, steps int) map[string]any {
	return map[string]any{
		"3": map[string]any{"class_type": "KSampler", "inputs": map[string]any{"seed": seed, "steps": steps, "cfg": 5,
			"sampler_name": "euler", "scheduler": "normal", "denoise": 1, "model": []any{"4", 0}, "positive": []any{"6", 0},
			"negative": []any{"7", 0}, "latent_image": []any{"5", 0}}},
		"4": map[string]any{"class_type": "CheckpointLoaderSimple", "inputs": map[string]any{"ckpt_name": "tiny.safetensors"}},
		"5": map[string]any{"class_type": "EmptyLatentImage", "inputs": map[string]any{"width": 64, "height": 64, "batch_size": batch}},
		"6": map[string]any{"class_type": "CLIPTextEncode", "inputs": map[string]any{"text": prompt, "clip": []any{"10", 0}}},
		"7": map[string]any{"class_type": "CLIPTextEncode", "inputs": map[string]any{"text": "blurry", "clip": []any{"10", 0}}},
		"8": map[string]any{"class_type": "VAEDecode", "inputs": map[string]any{"samples": []any{"3", 0}, "vae": []any{"4", 2}}},
		"9": map[string]any{"class_type": "SaveImage", "inputs": map[string]any{"filename_prefix": "ComfyUI", "images": []any{"8", 0}},
			"_meta": map[string]any{"title": "Save Image"}},
		"10": map[string]any{"class_type": "CLIPSetLastLayer", "inputs": map[string]any{"stop_at_clip_layer": -1, "clip": []any{"4", 1}}},
	}
}

// comfyRun queues a graph and returns its history entry once finished.
func (s *server) comfyRun(key string, graph map[string]any) map[string]any {
	s.t.Helper()
	r := s.do("POST", "/prompt", key, map[string]any{"prompt": graph, "client_id": "test"})
	if r.status != http.StatusOK {
		s.t.Fatalf("POST /prompt: %d %s", r.status, r.body)
	}
	id := r.json(s.t)["prompt_id"].(string)
	deadline := time.Now().Add(90 * time.Second)
	for {
		h := s.do("GET", "/history/"+id, key, nil).json(s.t)
		if e, ok := h[id].(map[string]any); ok {
			return e
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("prompt %s never finished", id)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// comfyImages fetches a history entry's output images through /view.
func (s *server) comfyImages(key string, entry map[string]any, node string) []image.Image {
	s.t.Helper()
	out := entry["outputs"].(map[string]any)[node].(map[string]any)["images"].([]any)
	var imgs []image.Image
	for _, o := range out {
		o := o.(map[string]any)
		r := s.do("GET", "/view?filename="+o["filename"].(string)+"&type="+o["type"].(string)+"&subfolder=", key, nil)
		img, err := png.Decode(bytes.NewReader(r.body))
		if r.status != http.StatusOK || err != nil {
			s.t.Fatalf("/view %v: %d %v", o, r.status, err)
		}
		imgs = append(imgs, img)
	}
	return imgs
}

func samePixels(a, b image.Image) bool {
	if a.Bounds() != b.Bounds() {
		return false
	}
	for y := a.Bounds().Min.Y; y < a.Bounds().Max.Y; y++ {
		for x := a.Bounds().Min.X; x < a.Bounds().Max.X; x++ {
			if a.At(x, y) != b.At(x, y) {
				return false
			}
		}
	}
	return true
}

func TestComfyUIPromptToImages(t *testing.T) {
	s := startServer(t, func(c *config.Config) { c.PreviewEvery = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.base, "http")+"/ws?clientId=test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	_, first, err := ws.Read(ctx)
	if err != nil || !strings.Contains(string(first), `"sid":"test"`) || !strings.Contains(string(first), `"type":"status"`) {
		t.Fatalf("first message %s, %v", first, err)
	}

	// A batch of two keeps ComfyUI's seed semantics: one generator for the
	// batch, so its first image is the seed's single image and its second
	// is not the single image of seed+1.
	entry := s.comfyRun("", comfyGraph("a red circle", 7, 2, 3))
	st := entry["status"].(map[string]any)
	if st["completed"] != true || st["status_str"] != "success" {
		t.Fatalf("history %v", entry)
	}
	batch := s.comfyImages("", entry, "9")
	single := s.comfyImages("", s.comfyRun("", comfyGraph("a red circle", 7, 1, 3)), "9")
	next := s.comfyImages("", s.comfyRun("", comfyGraph("a red circle", 8, 1, 3)), "9")
	if len(batch) != 2 || !samePixels(batch[0], single[0]) || samePixels(batch[1], next[0]) {
		t.Fatalf("seed semantics: batch[0]==single %v, batch[1]==seed+1 %v", samePixels(batch[0], single[0]), samePixels(batch[1], next[0]))
	}

	// The socket saw the execution in ComfyUI's messages, with previews.
	seen := map[string]bool{}
	previews := 0
	for !seen["execution_success"] || previews == 0 {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("ws: %v (seen %v, previews %d)", err, seen, previews)
		}
		if typ == websocket.MessageBinary {
			if len(data) > 8 && data[3] == 1 && data[7] == 1 && data[8] == 0xFF && data[9] == 0xD8 {
				previews++
			}
			continue
		}
		var m struct {
			Type string         `json:"type"`
			Data map[string]any `json:"data"`
		}
		_ = json.Unmarshal(data, &m)
		seen[m.Type] = true
		if m.Type == "progress" && (m.Data["max"].(float64) != 3 || m.Data["node"] != "3") {
			t.Fatalf("progress %s", data)
		}
		if m.Type == "executed" && m.Data["node"] != "9" {
			t.Fatalf("executed %s", data)
		}
	}
	for _, typ := range []string{"execution_start", "executing", "progress", "executed"} {
		if !seen[typ] {
			t.Errorf("no %s message (saw %v)", typ, seen)
		}
	}

	// img2img: upload, LoadImage → ImageScale → VAEEncode → KSampler(denoise).
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("image", "in.png")
	_ = png.Encode(fw, batch[0])
	_ = mw.WriteField("overwrite", "false")
	mw.Close()
	req, _ := http.NewRequest("POST", s.base+"/upload/image", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: %v %v", err, resp)
	}
	var up map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&up)
	resp.Body.Close()
	g := comfyGraph("a red circle at night", 3, 1, 4)
	g["3"].(map[string]any)["inputs"].(map[string]any)["denoise"] = 0.5
	g["3"].(map[string]any)["inputs"].(map[string]any)["latent_image"] = []any{"12", 0}
	g["11"] = map[string]any{"class_type": "LoadImage", "inputs": map[string]any{"image": up["name"]}}
	g["13"] = map[string]any{"class_type": "ImageScale", "inputs": map[string]any{"image": []any{"11", 0}, "upscale_method": "bilinear",
		"width": 128, "height": 64, "crop": "disabled"}}
	g["12"] = map[string]any{"class_type": "VAEEncode", "inputs": map[string]any{"pixels": []any{"13", 0}, "vae": []any{"4", 2}}}
	out := s.comfyImages("", s.comfyRun("", g), "9")
	if out[0].Bounds().Dx() != 128 || out[0].Bounds().Dy() != 64 {
		t.Fatalf("img2img size %v", out[0].Bounds())
	}

	// Unsupported nodes and bad inputs are refused naming the node.
	for _, c := range []struct {
		mod   func(g map[string]any)
		node  string
		class string
	}{
		{func(g map[string]any) {
			g["20"] = map[string]any{"class_type": "UpscaleModelLoader", "inputs": map[string]any{"model_name": "x"}}
		}, "20", "UpscaleModelLoader"},
		{func(g map[string]any) {
			g["3"].(map[string]any)["inputs"].(map[string]any)["sampler_name"] = "dpmpp_3m_sde"
		}, "3", "KSampler"},
		{func(g map[string]any) {
			g["4"].(map[string]any)["inputs"].(map[string]any)["ckpt_name"] = "sdxl.safetensors"
		}, "4", "CheckpointLoaderSimple"},
		{func(g map[string]any) { delete(g["6"].(map[string]any)["inputs"].(map[string]any), "text") }, "6", "CLIPTextEncode"},
		{func(g map[string]any) { g["5"].(map[string]any)["inputs"].(map[string]any)["width"] = 65 }, "3", "KSampler"},
	} {
		g := comfyGraph("x", 1, 1, 2)
		c.mod(g)
		r := s.do("POST", "/prompt", "", map[string]any{"prompt": g})
		var body struct {
			Error      map[string]any            `json:"error"`
			NodeErrors map[string]map[string]any `json:"node_errors"`
		}
		_ = json.Unmarshal(r.body, &body)
		if r.status != 400 || body.NodeErrors[c.node] == nil || body.NodeErrors[c.node]["class_type"] != c.class {
			t.Errorf("%s: %d %s", c.class, r.status, r.body)
		}
	}

	// Catalogs.
	info := s.do("GET", "/object_info/KSampler", "", nil).json(t)
	if info["KSampler"] == nil || !strings.Contains(mustJSON(info), `"euler_ancestral"`) {
		t.Fatalf("object_info %v", info)
	}
	if q := s.do("GET", "/queue", "", nil).json(t); len(q["queue_running"].([]any)) != 0 || len(q["queue_pending"].([]any)) != 0 {
		t.Fatalf("queue %v", q)
	}
	if st := s.do("GET", "/system_stats", "", nil).json(t); st["system"].(map[string]any)["ram_total"].(float64) <= 0 || len(st["devices"].([]any)) == 0 {
		t.Fatalf("system_stats %v", st)
	}
	if r := s.do("GET", "/prompt", "", nil).json(t); r["exec_info"] == nil {
		t.Fatalf("GET /prompt %v", r)
	}
}
