package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestHelpOnStdout checks that every command's help goes to stdout with
// exit status 0, as peers' tools do, and that a bare kiln is a usage
// error on stderr.
func TestHelpOnStdout(t *testing.T) {
	lines := [][]string{{"--help"}, {"-h"}, {"help"}, {"help", "generate"}}
	for name := range commands() {
		lines = append(lines, []string{name, "--help"}, []string{name, "-h"})
	}
	lines = append(lines, []string{"tenants", "create", "--help"}, []string{"tenants", "list", "--help"}, []string{"policy", "test", "--help"})
	for _, args := range lines {
		var stdout, stderr bytes.Buffer
		code := runMain(context.Background(), args, &stdout, &stderr)
		if code != 0 || stdout.Len() == 0 || stderr.Len() != 0 || !strings.Contains(strings.ToLower(stdout.String()), "usage") {
			t.Errorf("kiln %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, stdout.String(), stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := runMain(context.Background(), nil, &stdout, &stderr); code != 2 || stdout.Len() != 0 || stderr.Len() == 0 {
		t.Errorf("bare kiln: exit %d, stdout %q", code, stdout.String())
	}
}
