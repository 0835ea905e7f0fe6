package wasmhost

import (
	"context"
	"encoding/json"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/kiln-project/kiln/internal/guestbuild"
	nodes "github.com/kiln-project/kiln/nodes-wasm/builtin"
	"github.com/kiln-project/kiln/policies"
	"github.com/kiln-project/kiln/policies/builtin"
	"github.com/kiln-project/kiln/wasmhost/abi"
)

// percentiles reports p50 and p99 of the per-operation times in µs.
func percentiles(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	at := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

// BenchmarkBatching64 is one batching decision over 64 queued jobs: the
// built-in Wasm module (encoding, call, decoding and validation included),
// compiled with deadline checks as uploaded modules are and without them
// as the trusted built-ins are, against the same code run natively.
func BenchmarkBatching64(b *testing.B) {
	in := sampleBatching(64)
	for _, trusted := range []bool{false, true} {
		name := "wasm-checked"
		if trusted {
			name = "wasm-trusted"
		}
		b.Run(name, func(b *testing.B) {
			benchBatchingWasm(b, in, trusted)
		})
	}
	b.Run("native", func(b *testing.B) {
		d := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			t := time.Now()
			out := builtin.Batching(in)
			if err := abi.ValidateBatching(in, &out); err != nil {
				b.Fatal(err)
			}
			d = append(d, time.Since(t))
		}
		percentiles(b, d)
	})
}

func benchBatchingWasm(b *testing.B, in *abi.BatchingInput, trusted bool) {
	h := newTestHost(b, Config{})
	m, err := h.Load(context.Background(), Spec{Name: "builtin", Kind: KindPolicy, Trusted: trusted}, policies.Builtin())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 50; i++ { // warm the instance
		m.CallBatching(ctx, in)
	}
	d := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t := time.Now()
		if _, o := m.CallBatching(ctx, in); !o.OK() {
			b.Fatal(o.Err)
		}
		d = append(d, time.Since(t))
	}
	b.StopTimer()
	percentiles(b, d)
}

// BenchmarkPostResize512 resizes a 512×512 image to 256×256 with the
// built-in resize node: through Wasm (image copied in and out of the
// guest, resampled by the host function) and natively.
func BenchmarkPostResize512(b *testing.B) {
	src := gradient(512, 512)
	ps := params("width", "256", "height", "256")
	b.Run("wasm", func(b *testing.B) {
		h := newTestHost(b, Config{})
		m := loadBuiltinNodes(b, h)
		ctx := context.Background()
		d := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			t := time.Now()
			out, o := m.CallNodePost(ctx, &abi.PostInput{Node: "resize", Params: ps, Image: src})
			if !o.OK() || out.Image.Width != 256 {
				b.Fatal(o.Err)
			}
			d = append(d, time.Since(t))
		}
		percentiles(b, d)
	})
	b.Run("native", func(b *testing.B) {
		d := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			t := time.Now()
			if out := nodes.Post(&abi.PostInput{Node: "resize", Params: ps, Image: src}); out.Reject {
				b.Fatal(out.Reason)
			}
			d = append(d, time.Since(t))
		}
		percentiles(b, d)
	})
}

// BenchmarkCompile compiles the built-in policies module (2 MB): cold,
// into an empty cache directory, and from a warm disk cache in a new host.
func BenchmarkCompile(b *testing.B) {
	ctx := context.Background()
	wasm := policies.Builtin()
	b.Run("cold", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			dir, err := os.MkdirTemp("", "kiln-bench-cache-")
			if err != nil {
				b.Fatal(err)
			}
			h, _ := New(ctx, Config{CacheDir: dir})
			rt, err := h.runtimeFor(ctx, "", KindPolicy, false)
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if _, err := rt.rt.CompileModule(ctx, wasm); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			_ = h.Close(ctx)
			_ = os.RemoveAll(dir)
			b.StartTimer()
		}
	})
	b.Run("cached", func(b *testing.B) {
		dir := b.TempDir()
		h, _ := New(ctx, Config{CacheDir: dir})
		rt, _ := h.runtimeFor(ctx, "", KindPolicy, false)
		if _, err := rt.rt.CompileModule(ctx, wasm); err != nil {
			b.Fatal(err)
		}
		_ = h.Close(ctx)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			h, _ := New(ctx, Config{CacheDir: dir})
			rt, err := h.runtimeFor(ctx, "", KindPolicy, false)
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if _, err := rt.rt.CompileModule(ctx, wasm); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			_ = h.Close(ctx)
			b.StartTimer()
		}
	})
}

// BenchmarkInstantiate creates an instance of the built-in policies
// module: instantiation, the Go runtime's initialiser and the version
// check.
func BenchmarkInstantiate(b *testing.B) {
	h := newTestHost(b, Config{})
	m := loadBuiltinPolicies(b, h)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		inst, err := m.instantiate(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = inst.mod.Close(ctx)
		b.StartTimer()
	}
}

// BenchmarkGuestDecode compares, inside a Go guest, decoding the 64-job
// batching input in the ABI's binary encoding and in JSON (the whole call:
// copy in, decode, answer). It builds testdata/decodebench with the Go
// toolchain.
func BenchmarkGuestDecode(b *testing.B) {
	dir := b.TempDir()
	wasm := guestbuild.New(dir).Build(b, "./testdata/decodebench")
	in := sampleBatching(64)
	bin := abi.EncodeBatchingInput(nil, in)
	js, _ := json.Marshal(in)
	for _, trusted := range []bool{false, true} {
		h := newTestHost(b, Config{})
		m, err := h.Load(context.Background(), Spec{Name: "decodebench", Kind: KindPolicy, Trusted: trusted}, wasm)
		if err != nil {
			b.Fatal(err)
		}
		suffix := "-checked"
		if trusted {
			suffix = "-trusted"
		}
		for _, c := range []struct {
			name  string
			hook  abi.Hook
			input []byte
		}{{"binary", abi.HookBatching, bin}, {"json", abi.HookQuality, js}} {
			b.Run(c.name+suffix, func(b *testing.B) {
				check := func([]byte) error { return nil }
				for i := 0; i < 20; i++ {
					m.invoke(context.Background(), c.hook, 0, c.input, 1<<20, check)
				}
				b.ReportMetric(float64(len(c.input)), "input-bytes")
				d := make([]time.Duration, 0, b.N)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					t := time.Now()
					if o := m.invoke(context.Background(), c.hook, 0, c.input, 1<<20, check); !o.OK() {
						b.Fatal(o.Err)
					}
					d = append(d, time.Since(t))
				}
				b.StopTimer()
				percentiles(b, d)
			})
		}
	}
}
