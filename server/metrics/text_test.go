package metrics

import (
	"io"
	"strings"
	"testing"
)

func TestCollectTextAppendsFamilies(t *testing.T) {
	r := NewRegistry()
	r.NewCounter("kiln_a_total", "A.").Inc()
	r.CollectText(func(w io.Writer) error {
		_, err := io.WriteString(w, "# TYPE kiln_z_seconds histogram\nkiln_z_seconds_count 3\n")
		return err
	})
	var b strings.Builder
	if _, err := r.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "kiln_a_total 1") || !strings.HasSuffix(out, "kiln_z_seconds_count 3\n") {
		t.Fatalf("exposition:\n%s", out)
	}
}
