package api

import (
	"testing"

	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/server/events"
)

func TestResidenciesCountSharedComponentsOnce(t *testing.T) {
	mgr, err := memory.New(memory.Config{Name: "cuda:0", Budget: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	vae := memory.Component{Kind: "vae", Hash: "v", Bytes: 100}
	mgr.Place("ft1", memory.GPU, []memory.Component{vae, {Kind: "unet", Hash: "u1", Bytes: 1000}})
	mgr.Place("ft2", memory.Host, []memory.Component{vae, {Kind: "unet", Hash: "u2", Bytes: 1000}})
	ws := []events.Heartbeat{{Worker: "w1", Device: "cuda:0", Memory: mgr.Models()}, {Worker: "w2", Device: "cpu"}}
	where, totals := residencies(ws)
	if len(totals) != 1 || totals[0] != (workerMemory{Worker: "w1", Device: "cuda:0", GPUBytes: 1100, HostBytes: 1000, SavedBytes: 100}) {
		t.Fatalf("totals %+v", totals)
	}
	r := where["ft2"]
	if len(r) != 1 || r[0].Tier != "host" || r[0].Bytes != 1100 || r[0].UniqueBytes != 1000 || len(r[0].Shared) != 1 || r[0].Shared[0].With[0] != "ft1" {
		t.Fatalf("ft2 residency %+v", r)
	}
	if len(where["ft1"]) != 1 || where["ft1"][0].Tier != "gpu" {
		t.Fatalf("ft1 residency %+v", where["ft1"])
	}
}
