package abi

import (
	"reflect"
	"testing"
)

func TestEvictionTiersMinor(t *testing.T) {
	in := EvictionInput{NowUS: 5, NeededBytes: 1 << 30, HostFreeBytes: 4, Tiers: true, HostBudgetBytes: 8 << 30,
		Models: []Model{{ID: "a", Bytes: 9, UniqueBytes: 5, OffloadUS: 30, RestoreUS: 20, Queued: 3}, {ID: "b", Bytes: 1, UniqueBytes: 1}}}
	// A minor-3 module gets everything.
	if got, err := DecodeEvictionInput(EncodeEvictionInputAt(nil, &in, MinorTiers)); err != nil || !reflect.DeepEqual(got, in) {
		t.Fatalf("minor 3: %v\n%+v\n%+v", err, got, in)
	}
	// An older module gets the minor-0 message, which decodes without tiers.
	old := EncodeEvictionInputAt(nil, &in, MinorQuality)
	got, err := DecodeEvictionInput(old)
	if err != nil || got.Tiers || got.HostBudgetBytes != 0 || got.Models[0].UniqueBytes != 0 || got.Models[0].Queued != 0 {
		t.Fatalf("minor 2: %v %+v", err, got)
	}
	// A host without the figures says so in one byte.
	in.Tiers = false
	b := EncodeEvictionInputAt(nil, &in, MinorTiers)
	if len(b) != len(old)+1 {
		t.Fatalf("minor 3 without tiers adds %d bytes", len(b)-len(old))
	}
	// Reusing a decoded input for one without tiers clears the fields.
	var reuse EvictionInput
	in.Tiers = true
	DecodeEvictionInputInto(EncodeEvictionInputAt(nil, &in, MinorTiers), &reuse, false)
	DecodeEvictionInputInto(old, &reuse, false)
	if reuse.Tiers || reuse.Models[0].RestoreUS != 0 {
		t.Fatalf("stale minor-3 fields: %+v", reuse)
	}
	// Truncated minor-3 fields are an error; unique bytes above bytes are
	// bad host input.
	full := EncodeEvictionInputAt(nil, &in, MinorTiers)
	if _, err := DecodeEvictionInput(full[:len(full)-2]); err == nil {
		t.Fatal("truncated minor-3 fields decoded")
	}
	in.Models[1].UniqueBytes = 2
	if err := CheckEvictionInput(&in); err == nil {
		t.Fatal("unique bytes above bytes accepted")
	}
}
