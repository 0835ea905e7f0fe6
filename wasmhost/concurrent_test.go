package wasmhost

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"

	wb "github.com/kiln-project/kiln/internal/wasmbuild"
	"github.com/kiln-project/kiln/policies/builtin"
	"github.com/kiln-project/kiln/wasmhost/abi"
)

// TestConcurrentCalls drives one module from many goroutines (run with
// -race): every call gets an instance of its own, answers stay right, and
// the counters add up. A trapping module runs alongside in the same
// tenant's runtime.
func TestConcurrentCalls(t *testing.T) {
	h := newTestHost(t, Config{MaxIdle: 2, MaxInstances: 4, FailureThreshold: 1 << 30})
	m := loadBuiltinPolicies(t, h)
	bad, err := h.Load(context.Background(), Spec{Name: "trap", Kind: KindPolicy}, abiModule(1, wb.Func{Body: []byte{wb.OpUnreachable}}).Bytes())
	if err != nil {
		t.Fatal(err)
	}
	const workers, calls = 8, 12
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				in := sampleBatching(1 + (w*calls+i)%40)
				in.NowUS += int64(w * 1000)
				got, o := m.Batching(context.Background(), in)
				if !o.OK() {
					errs <- fmt.Errorf("worker %d call %d: %s %v", w, i, o.Result, o.Err)
					return
				}
				if want := builtin.Batching(in); !reflect.DeepEqual(got, want) {
					errs <- fmt.Errorf("worker %d call %d: wasm %+v native %+v", w, i, got, want)
					return
				}
				if got2, o := bad.Batching(context.Background(), in); o.Result != ResultTrap || !reflect.DeepEqual(got2, got) {
					errs <- fmt.Errorf("worker %d: trap module gave %s", w, o.Result)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := h.Metrics().Calls("builtin", abi.HookBatching, ResultOK); n != workers*calls {
		t.Fatalf("ok calls %d, want %d", n, workers*calls)
	}
	if n := h.Metrics().Calls("trap", abi.HookBatching, ResultTrap); n != workers*calls {
		t.Fatalf("trap calls %d, want %d", n, workers*calls)
	}
	m.mu.Lock()
	idle := len(m.idle)
	m.mu.Unlock()
	if idle > 2 {
		t.Fatalf("%d idle instances kept, MaxIdle is 2", idle)
	}
}
