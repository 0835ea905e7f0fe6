// Package layering holds the test that keeps Kiln's packages in their
// layers (docs/ARCHITECTURE.md): the native core imports nothing that
// serves, the sandbox runtime imports no guest code or server, the server
// infrastructure imports neither gateway nor worker, and the composition
// root (app/) is imported only by cmd/kiln. Test files are not checked.
package layering

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/kiln-project/kiln/"

// rule forbids packages under from to import packages under any of to.
type rule struct {
	from string
	to   []string
	why  string
}

var rules = []rule{
	{"core/", []string{"server/", "gateway/", "worker/", "app", "tools/", "wasmhost", "policies", "nodes-wasm", "cuda", "bench", "cmd/", "web"},
		"the native core is a library: serving, tools and backends build on it"},
	{"core/family", []string{"core/model/", "core/pipeline", "core/checkpoint"},
		"the family seam is below every family and the pipeline"},
	{"core/pipeline", []string{"core/model/sd", "core/model/clip", "core/model/unet", "core/model/vae", "core/checkpoint"},
		"the pipeline reaches models only through core/family and core/model/families"},
	{"cuda", []string{"server/", "gateway/", "worker/", "app", "tools/", "wasmhost", "bench", "cmd/"},
		"the CUDA backend implements core/backend and nothing above it"},
	{"wasmhost", []string{"policies", "nodes-wasm", "server/", "gateway/", "worker/", "app", "cmd/", "core/", "cuda"},
		"the sandbox runtime imports only its ABI, wazero and the image ops; the composition root hands it the built-ins"},
	{"policies", []string{"server/", "gateway/", "worker/", "app", "core/", "cuda", "wasmhost/registry", "wasmhost/conformance"},
		"guests compile to Wasm against the ABI alone"},
	{"nodes-wasm", []string{"server/", "gateway/", "worker/", "app", "core/", "cuda", "wasmhost/registry", "wasmhost/conformance"},
		"guests compile to Wasm against the ABI alone"},
	{"server/", []string{"gateway/", "worker/", "app", "cmd/", "tools/", "wasmhost/registry"},
		"server/ is the infrastructure gateway and worker share"},
	{"gateway/", []string{"worker/", "app", "cmd/", "tools/", "cuda"},
		"the gateway talks to workers only through server/ (JetStream)"},
	{"worker/", []string{"gateway/", "app", "cmd/", "tools/"},
		"the worker talks to the gateway only through server/ (JetStream)"},
	{"bench", []string{"server/", "gateway/", "worker/", "app", "cmd/", "tools/"},
		"the benchmark suite measures the core on a backend"},
}

// allowedImportersOfApp are the only packages that may import app/.
func appImporterOK(pkg string) bool {
	return pkg == "cmd/kiln" || pkg == "app" || strings.HasPrefix(pkg, "app/")
}

func under(pkg, prefix string) bool {
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(pkg, prefix) || pkg == strings.TrimSuffix(prefix, "/")
	}
	return pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
}

// imports lists every package of the module with its non-test imports
// inside the module.
func imports(t *testing.T) map[string][]string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipping: no go command on the PATH to list packages")
	}
	cmd := exec.Command(goBin, "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], module) {
			continue
		}
		pkg := strings.TrimPrefix(f[0], module)
		m[pkg] = nil
		for _, imp := range f[1:] {
			if strings.HasPrefix(imp, module) {
				m[pkg] = append(m[pkg], strings.TrimPrefix(imp, module))
			}
		}
	}
	return m
}

func TestLayering(t *testing.T) {
	pkgs := imports(t)
	if len(pkgs) < 50 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	for pkg, imps := range pkgs {
		for _, imp := range imps {
			if under(imp, "app") && !appImporterOK(pkg) {
				t.Errorf("%s imports %s: the composition root is imported only by cmd/kiln", pkg, imp)
			}
			for _, r := range rules {
				if !under(pkg, strings.TrimSuffix(r.from, "/")) {
					continue
				}
				for _, to := range r.to {
					if under(imp, strings.TrimSuffix(to, "/")) {
						t.Errorf("%s imports %s: %s", pkg, imp, r.why)
					}
				}
			}
		}
	}
}

// TestRulesCatchAViolation checks the matcher on made-up imports, so that
// a rule that silently matches nothing is noticed.
func TestRulesCatchAViolation(t *testing.T) {
	for _, c := range []struct {
		pkg, imp string
		bad      bool
	}{
		{"core/pipeline", "server/jobs", true},
		{"core/pipeline", "core/model/sd", true},
		{"core/pipeline", "core/model/families", false},
		{"wasmhost", "policies/builtin", true},
		{"wasmhost/registry", "nodes-wasm", true},
		{"server/catalog", "core/model/families", false},
		{"gateway/api", "worker", true},
		{"cudax", "server/jobs", false},
	} {
		bad := false
		for _, r := range rules {
			if !under(c.pkg, strings.TrimSuffix(r.from, "/")) {
				continue
			}
			for _, to := range r.to {
				bad = bad || under(c.imp, strings.TrimSuffix(to, "/"))
			}
		}
		if bad != c.bad {
			t.Errorf("%s → %s: violation %v, want %v", c.pkg, c.imp, bad, c.bad)
		}
	}
	if appImporterOK("worker") || !appImporterOK("cmd/kiln") {
		t.Error("app importer rule")
	}
}
