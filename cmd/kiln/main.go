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
		"models":   {"list a running server's models: GPU, host memory or disk, sizes, components shared", runModels},
	}
}

// version is set at link time with -ldflags "-X main.version=...".
var version = "dev"

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) error {
	_, err := fmt.Fprintln(stdout, "kiln", version)
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
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "kiln: unknown command %q (run 'kiln help')\n", args[0])
		return 2
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
