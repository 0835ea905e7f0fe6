package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/kiln-project/kiln/wasmhost"
	"github.com/kiln-project/kiln/wasmhost/conformance"
	"github.com/kiln-project/kiln/wasmhost/registry"
)

const policyUsage = `usage: kiln policy <command> [flags]

commands:
  test [flags] FILE.wasm   run the conformance suite (what an upload runs) over
                           a policy or node module and print the report

test flags:
  --kind policy|node       the module's kind (default: policy, else node)
  --json                   print the report as JSON
  --policy-call DUR        deadline of one policy call (default 100ms)
  --node-call DUR          deadline of one node call (default 2s)
  --policy-memory-pages N  memory cap of a policy, 64 KiB pages (default 512)
  --node-memory-pages N    memory cap of a node, 64 KiB pages (default 2048)
  --cache-dir DIR          compilation cache directory (default: none)
`

// errConformance is returned when a module fails the suite (exit status 1).
var errConformance = errors.New("the module failed the conformance suite")

// runPolicy runs the policy subcommands.
func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, policyUsage)
		if len(args) == 0 {
			return usageError{fmt.Errorf("missing command")}
		}
		return flag.ErrHelp
	}
	switch args[0] {
	case "test":
		return runPolicyTest(ctx, args[1:], stdout, stderr)
	}
	return usageError{fmt.Errorf("unknown policy command %q (run 'kiln policy help')", args[0])}
}

func runPolicyTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kiln policy test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, policyUsage) }
	kind := fs.String("kind", "", "policy or node (default: try policy, then node)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	var b conformance.Budgets
	fs.DurationVar(&b.PolicyCall, "policy-call", 0, "deadline of one policy call")
	fs.DurationVar(&b.NodeCall, "node-call", 0, "deadline of one node call")
	pp := fs.Uint("policy-memory-pages", 0, "memory cap of a policy in 64 KiB pages")
	np := fs.Uint("node-memory-pages", 0, "memory cap of a node in 64 KiB pages")
	cacheDir := fs.String("cache-dir", "", "compilation cache directory")
	// The file may come before or after the flags.
	var files []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return usageError{err}
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(files) != 1 {
		return usageError{fmt.Errorf("test takes one module file")}
	}
	if *pp > 65536 || *np > 65536 {
		return usageError{fmt.Errorf("memory pages must be at most 65536")}
	}
	b.PolicyMemoryPages, b.NodeMemoryPages = uint32(*pp), uint32(*np)
	opts := conformance.Options{Budgets: b, CacheDir: *cacheDir}
	switch *kind {
	case "":
	case "policy", "node":
		k := wasmhost.KindPolicy
		if *kind == "node" {
			k = wasmhost.KindNode
		}
		opts.Kind = &k
	default:
		return usageError{fmt.Errorf("--kind must be policy or node, not %q", *kind)}
	}
	wasm, err := os.ReadFile(files[0])
	if err != nil {
		return err
	}
	rep, err := conformance.Test(ctx, filepath.Base(files[0]), wasm, opts)
	if err != nil {
		return err
	}
	if *asJSON {
		err = registry.WriteJSON(stdout, rep)
	} else {
		err = rep.Write(stdout)
	}
	if err != nil {
		return err
	}
	if !rep.Passed {
		return errConformance
	}
	return nil
}
