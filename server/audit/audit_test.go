package audit

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-project/kiln/server/broker"
)

func TestRecordAndLast(t *testing.T) {
	ctx := context.Background()
	b, err := broker.Start(ctx, broker.Options{DataDir: filepath.Join(t.TempDir(), "d")})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	l, err := Open(ctx, b.JS, time.Hour, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := l.Last(ctx, 5); err != nil || len(got) != 0 {
		t.Fatalf("empty log: %v %v", got, err)
	}
	for _, target := range []string{"a", "b", "c"} {
		if err := l.Record(ctx, Entry{Actor: "admin", Action: "POST /v1/admin/tenants", Target: target, Status: 201}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := l.Last(ctx, 2)
	if err != nil || len(got) != 2 || got[0].Target != "b" || got[1].Target != "c" || got[1].Time.IsZero() {
		t.Fatalf("last 2: %+v %v", got, err)
	}
}
