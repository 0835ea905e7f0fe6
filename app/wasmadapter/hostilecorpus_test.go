package wasmadapter_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/kiln-project/kiln/app"
	"github.com/kiln-project/kiln/internal/fixtures"
	wb "github.com/kiln-project/kiln/internal/wasmbuild"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/wasmhost/abi"
)

// hostileModule is a module with the ABI's exports whose hook (quality or
// node_pre) has the given body.
func hostileModule(hook abi.Hook, body []byte, pages uint32, imports ...wb.Import) []byte {
	return (&wb.Module{MemoryPages: pages, MemoryExport: abi.ExportMemory, Imports: imports, Funcs: []wb.Func{
		{Results: []byte{wb.I32}, Body: wb.I32Const(1), Export: abi.ExportVersion},
		{Params: []byte{wb.I32}, Results: []byte{wb.I32}, Body: wb.I32Const(1024), Export: abi.ExportAlloc},
		{Params: []byte{wb.I32, wb.I32}, Results: []byte{wb.I64}, Body: body, Export: hook.Export()},
	}}).Bytes()
}

// hostileCorpus is every module the corpus uploads, by name: each must be
// refused at upload with a 4xx.
func hostileCorpus() map[string][]byte {
	loop := wb.Cat([]byte{wb.OpLoop, wb.BlockEmpty, wb.OpBr, 0, wb.OpEnd}, wb.I64Const(0))
	grow := wb.Cat([]byte{wb.OpLoop, wb.BlockEmpty}, wb.I32Const(8), []byte{wb.OpMemoryGrow, 0},
		wb.I32Const(-1), []byte{wb.OpI32Ne, wb.OpBrIf, 0, wb.OpEnd, wb.OpUnreachable})
	trap := []byte{wb.OpUnreachable}
	garbage := wb.I64Const(int64(uint64(1024)<<32 | 3)) // 3 bytes of whatever memory holds
	oversized := wb.I64Const(int64(uint64(1024)<<32 | 1<<30))
	brTable := func(n int) []byte {
		b := wb.Cat([]byte{0x02, wb.BlockEmpty}, wb.I32Const(0), []byte{0x0e})
		b = wb.Uleb(b, uint64(n))
		b = append(b, make([]byte, n+1)...)
		return wb.Cat(b, []byte{wb.OpEnd}, wb.I64Const(0))
	}
	nest := func(n int) []byte {
		b := bytes.Repeat([]byte{0x02, wb.BlockEmpty}, n)
		return wb.Cat(b, bytes.Repeat([]byte{wb.OpEnd}, n), wb.I64Const(0))
	}
	out := map[string][]byte{}
	for _, hook := range []abi.Hook{abi.HookQuality, abi.HookNodePre} {
		for name, body := range map[string][]byte{"loop": loop, "grow": grow, "trap": trap, "garbage": garbage,
			"oversized": oversized, "brtable-bomb": brTable(2_000_000), "nest-bomb": nest(1_000_000),
			// Within the function size limit, over the br_table and nesting limits.
			"brtable-500k": brTable(500_000), "nest-300k": nest(300_000)} {
			out[string(hook)+"-"+name] = hostileModule(hook, body, 1)
		}
		out[string(hook)+"-forbidden-import"] = hostileModule(hook, wb.I64Const(0), 1,
			wb.Import{Module: "env", Name: "system", Params: []byte{wb.I32}, Results: []byte{wb.I32}})
		out[string(hook)+"-wasi-sockets"] = hostileModule(hook, wb.I64Const(0), 1,
			wb.Import{Module: "wasi_snapshot_preview1", Name: "sock_accept", Params: []byte{wb.I32, wb.I32, wb.I32}, Results: []byte{wb.I32}})
		out[string(hook)+"-huge-memory"] = hostileModule(hook, wb.I64Const(0), 65536)
	}
	out["not-a-module"] = []byte("\x00asm\x01\x00\x00\x00garbage")
	return out
}

// TestHostileWasmCorpus uploads every hostile module as one tenant while
// another tenant's jobs run: every upload is refused with a 4xx, the
// victim's jobs all succeed, and the server serves throughout. The victim's
// latencies before and during the attack are reported (measured, not
// asserted).
func TestHostileWasmCorpus(t *testing.T) {
	model := fixtures.Require(t, "sd15-tiny/model")
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.Models = map[string]string{"tiny": model}
	cfg.BuiltinModel = false
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	in, err := app.Start(ctx, app.Options{Config: cfg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Stop(context.Background()) })
	base := "http://" + in.Addr()
	keys := map[string]string{}
	// The victim submits jobs back to back for the whole attack: its
	// images-per-minute quota must not be what stops it on a fast machine.
	quota := cfg.DefaultQuota
	quota.ImagesPerMinute = 100000
	for _, id := range []string{"attacker", "victim"} {
		_, k, err := in.Tenants().Create(ctx, id, quota)
		if err != nil {
			t.Fatal(err)
		}
		keys[id] = k
	}
	do := func(method, path, key string, body []byte) (int, []byte) {
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("%s %s: %v", method, path, err)
			return 0, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, _ := do("GET", "/v1/account", keys["victim"], nil); c == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("keys never accepted")
		}
	}
	job := func() (time.Duration, error) {
		t0 := time.Now()
		body, _ := json.Marshal(map[string]any{"prompt": "victim", "width": 64, "height": 64, "steps": 2, "guidance": 5})
		code, b := do("POST", "/v1/jobs", keys["victim"], body)
		if code != http.StatusAccepted {
			return 0, fmt.Errorf("submit: %d %s", code, b)
		}
		var j map[string]any
		json.Unmarshal(b, &j)
		for deadline := time.Now().Add(120 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			_, b := do("GET", "/v1/jobs/"+j["id"].(string), keys["victim"], nil)
			json.Unmarshal(b, &j)
			switch j["status"] {
			case "succeeded":
				return time.Since(t0), nil
			case "failed", "canceled":
				return 0, fmt.Errorf("victim job %s", b)
			}
		}
		return 0, fmt.Errorf("victim job never finished")
	}
	p := func(d []time.Duration, q float64) time.Duration {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[min(len(d)-1, int(q*float64(len(d))))]
	}
	var baseline []time.Duration
	for i := 0; i < 5; i++ {
		d, err := job()
		if err != nil {
			t.Fatal(err)
		}
		baseline = append(baseline, d)
	}
	// The attack, with the victim's jobs running alongside.
	stop := make(chan struct{})
	var during []time.Duration
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			d, err := job()
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			during = append(during, d)
			mu.Unlock()
		}
	}()
	var slowest time.Duration
	for name, wasm := range hostileCorpus() {
		path := "/v1/policies/quality/" + name + "?mode=activate"
		if bytes.Contains([]byte(name), []byte("node_pre")) {
			path = "/v1/nodes/" + name
		}
		t0 := time.Now()
		code, body := do("PUT", path, keys["attacker"], wasm)
		slowest = max(slowest, time.Since(t0))
		if code < 400 || code > 499 {
			t.Errorf("%s (%d bytes): %d %s", name, len(wasm), code, body)
		}
		if testing.Verbose() {
			t.Logf("%s: %d in %v: %.200s", name, code, time.Since(t0).Round(time.Millisecond), body)
		}
		if c, _ := do("GET", "/healthz", keys["victim"], nil); c != 200 {
			t.Fatalf("server not serving after %s", name)
		}
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(during) == 0 {
		t.Fatal("no victim job finished during the attack")
	}
	t.Logf("hostile Wasm corpus: %d modules refused, slowest answer %v; victim p99 baseline %v, during the attack %v (%d jobs)",
		len(hostileCorpus()), slowest.Round(time.Millisecond), p(baseline, 0.99).Round(time.Millisecond), p(during, 0.99).Round(time.Millisecond), len(during))
}
