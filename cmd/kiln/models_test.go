package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestModelsListsResidencyAndSharing(t *testing.T) {
	answer := `{"object":"list","data":[
	 {"id":"ft1","bytes":2147483648,"default":true,"family":"sd","format":"diffusers","native_width":512,"native_height":512,"residency":[{"worker":"w1","device":"cuda:0","tier":"gpu","bytes":2147483648,"unique_bytes":1073741824,
	   "shared":[{"kind":"vae","hash":"xxh64:1","bytes":167772160,"with":["ft2"]}]}]},
	 {"id":"ft2","bytes":2147483648,"residency":[{"worker":"w1","device":"cuda:0","tier":"host","bytes":2147483648,"unique_bytes":1073741824}]},
	 {"id":"sdxl","bytes":6442450944}],
	 "memory":[{"worker":"w1","device":"cuda:0","gpu_bytes":2147483648,"host_bytes":1073741824,"saved_bytes":167772160}]}`
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		if r.URL.Path != "/v1/models" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(answer))
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	if err := runModels(context.Background(), []string{"--url", srv.URL, "--key", "k1"}, &out, &errb); err != nil {
		t.Fatal(err, errb.String())
	}
	text := out.String()
	for _, want := range []string{"ft1 (default)", "w1 gpu (cuda:0)", "w1 host (cuda:0)", "vae 160MiB with ft2", "sdxl", "disk", "SAVED BY SHARING"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if auth != "Bearer k1" {
		t.Errorf("authorization %q", auth)
	}
	// Errors from the server are reported with its status.
	if err := runModels(context.Background(), []string{"--url", srv.URL + "/nope"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("bad URL: %v", err)
	}
	if err := runModels(context.Background(), []string{"extra"}, &out, &errb); err == nil {
		t.Error("extra argument accepted")
	}
	// show: one model's details; an unknown name lists the known ones.
	out.Reset()
	if err := runModels(context.Background(), []string{"show", "ft1", "--url", srv.URL}, &out, &errb); err != nil {
		t.Fatal(err, errb.String())
	}
	for _, want := range []string{"family", "sd", "native size", "512x512", "diffusers", "w1 gpu (cuda:0)", "vae 160MiB with ft2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("show output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "ft2 ") || strings.Contains(out.String(), "sdxl") {
		t.Errorf("show printed other models:\n%s", out.String())
	}
	if err := runModels(context.Background(), []string{"show", "nope", "--url", srv.URL}, &out, &errb); err == nil || !strings.Contains(err.Error(), "ft1, ft2, sdxl") {
		t.Errorf("unknown model: %v", err)
	}
	if err := runModels(context.Background(), []string{"show"}, &out, &errb); err == nil {
		t.Error("show without a name accepted")
	}
}
