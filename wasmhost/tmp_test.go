package wasmhost

import (
	"os"
	"testing"
)

func mkTemp() (string, error) { return os.MkdirTemp("", "kiln-wasmhost-test-") }

func TestMain(m *testing.M) {
	code := m.Run()
	if cacheDir != "" {
		_ = os.RemoveAll(cacheDir)
	}
	os.Exit(code)
}
