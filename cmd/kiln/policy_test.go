package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPolicyTestCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	builtin := filepath.Join("..", "..", "policies", "builtin.wasm")
	if code := runMain(context.Background(), []string{"policy", "test", "--policy-call", "10s", builtin}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s%s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "batching  1000 jobs") || !strings.HasSuffix(strings.TrimSpace(out.String()), "PASS") {
		t.Fatalf("report:\n%s", out.String())
	}
	bad := filepath.Join(t.TempDir(), "bad.wasm")
	if err := os.WriteFile(bad, []byte("\x00asm\x01\x00\x00\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errOut.Reset()
	if code := runMain(context.Background(), []string{"policy", "test", "--json", bad}, &out, &errOut); code != 1 {
		t.Fatalf("empty module: exit %d", code)
	}
	if !strings.Contains(out.String(), `"passed": false`) || !strings.Contains(out.String(), "missing export kiln_abi_version") {
		t.Fatalf("json report:\n%s", out.String())
	}
	if code := runMain(context.Background(), []string{"policy", "test"}, &out, &errOut); code != 2 {
		t.Fatalf("no file: exit %d", code)
	}
}
