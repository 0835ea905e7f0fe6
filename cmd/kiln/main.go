// Command kiln is the one Kiln binary: it serves the API, generates images
// from the command line, benchmarks hardware and manages policies and tenants.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/kiln-project/kiln/internal/buildinfo"
)

// command is one subcommand of the kiln binary.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands lists the subcommands; each lives in a file of its own name.
func commands() map[string]command {
	return map[string]command{
		"version":  {"print the version", runVersion},
		"generate": {"generate images from a prompt (txt2img, img2img)", runGenerate},
		"serve":    {"run the API server, workers and embedded NATS", runServe},
		"tenants":  {"manage tenants and API keys (create, key, list, revoke, quota)", runTenants},
		"bench":    {"benchmark models on this machine (load, text encoder, UNet step, VAE, end to end)", runBench},
		"doctor":   {"report the GPU setup: CUDA driver, cuBLAS, GPUs, kernel image", runDoctor},
		"policy":   {"test Wasm policies and nodes against the conformance suite (kiln policy test FILE.wasm)", runPolicy},
		"models":   {"list a running server's models (GPU, host memory or disk, sizes, components shared); models show NAME for one", runModels},
	}
}

// version is set at link time with -ldflags "-X main.version=..."; left
// at "dev", the build's own module version or revision is reported.
var version = "dev"

// versionString is the version this binary reports.
func versionString() string {
	if version != "dev" {
		return version
	}
	return buildinfo.Version()
}

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if wantsHelp(args) {
		fmt.Fprintln(stderr, "usage: kiln version\n\nPrints the version of this binary.")
		return flag.ErrHelp
	}
	if len(args) > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", args[0])}
	}
	_, err := fmt.Fprintln(stdout, "kiln", versionString())
	return err
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// runMain dispatches to a subcommand and returns the process exit code.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 {
		usage(stderr, cmds)
		return 2
	}
	if isHelp(args[0]) || args[0] == "help" {
		// "kiln help generate" is "kiln generate --help".
		if args[0] == "help" && len(args) > 1 {
			if _, ok := cmds[args[1]]; ok {
				return runMain(ctx, []string{args[1], "--help"}, stdout, stderr)
			}
		}
		usage(stdout, cmds)
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "kiln: unknown command %q (run 'kiln help')\n", args[0])
		return 2
	}
	if wantsHelp(args[1:]) {
		// Asked-for help goes to stdout, as peers' tools do.
		stderr = stdout
	}
	if err := cmd.run(ctx, args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "kiln %s: %v\n", args[0], err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

// wantsHelp reports whether a command line asks for help (before "--").
func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if isHelp(a) {
			return true
		}
	}
	return false
}

// usageError marks an error in the command line (exit status 2).
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: kiln <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
}
