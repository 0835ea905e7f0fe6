package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/kiln-project/kiln/cuda"
)

// runDoctor implements `kiln doctor`: which CUDA libraries were found, which
// GPUs, and whether Kiln's kernels load on each. It exits 0 either way:
// a machine without a GPU runs Kiln on the CPU.
func runDoctor(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: kiln doctor\n\nReports the GPU setup: the CUDA driver and libraries found, the GPUs, and whether\nKiln's kernels load on each. Exits 0 either way; without a GPU Kiln runs on the CPU.")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	cuda.Probe().Print(stdout)
	return nil
}
