package comfyui

import (
	"encoding/json"
	"fmt"
	"testing"
)

// FuzzCompile: any ComfyUI graph compiles into plans or fails with an
// error naming a node, never a panic or a hang (cycles, deep chains,
// dangling links and wrong types included).
func FuzzCompile(f *testing.F) {
	f.Add([]byte(fmt.Sprintf(advanced, "0")))
	f.Add([]byte(`{"1":{"class_type":"KSampler","inputs":{"model":["1",0]}}}`))
	f.Add([]byte(`{"1":{"class_type":"VAEDecode","inputs":{"samples":["2",0],"vae":["3",9]}},"2":{"class_type":"VAEDecode","inputs":{"samples":["1",0]}}}`))
	f.Add([]byte(`{}`))
	defs := nodeDefs([]string{"sd15"})
	f.Fuzz(func(t *testing.T, data []byte) {
		var g Graph
		if json.Unmarshal(data, &g) != nil {
			return
		}
		plans, err := compile(g, defs, resolve)
		if err == nil && len(plans) == 0 {
			t.Fatalf("no error and no plan for %s", data)
		}
	})
}
