package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kiln-project/kiln/core/memory"
	"github.com/kiln-project/kiln/server/config"
)

// modelList is the part of GET /v1/models that `kiln models` shows.
type modelList struct {
	Data []struct {
		ID        string `json:"id"`
		Bytes     int64  `json:"bytes"`
		Default   bool   `json:"default"`
		Residency []struct {
			Worker      string                   `json:"worker"`
			Device      string                   `json:"device"`
			Tier        string                   `json:"tier"`
			Bytes       int64                    `json:"bytes"`
			UniqueBytes int64                    `json:"unique_bytes"`
			Shared      []memory.SharedComponent `json:"shared"`
		} `json:"residency"`
	} `json:"data"`
	Memory []struct {
		Worker     string `json:"worker"`
		Device     string `json:"device"`
		GPUBytes   int64  `json:"gpu_bytes"`
		HostBytes  int64  `json:"host_bytes"`
		SavedBytes int64  `json:"saved_bytes"`
	} `json:"memory"`
}

// runModels lists a running server's models: where each is (GPU, pinned
// host memory or disk) on which worker, its sizes, and the components it
// shares with other models by content hash.
func runModels(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	defaults, err := config.Default()
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("kiln models", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://"+defaults.Listen, "base URL of the Kiln server")
	key := fs.String("key", os.Getenv("KILN_API_KEY"), "API key (default $KILN_API_KEY; none for a keyless local server)")
	asJSON := fs.Bool("json", false, "print the server's answer as JSON")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(*url, "/")+"/v1/models", nil)
	if err != nil {
		return usageError{fmt.Errorf("--url: %w", err)}
	}
	if *key != "" {
		req.Header.Set("Authorization", "Bearer "+*key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("models: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("models: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("models: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var list modelList
	if err := json.Unmarshal(body, &list); err != nil {
		return fmt.Errorf("models: reading the answer: %w", err)
	}
	return printModels(stdout, &list)
}

func printModels(w io.Writer, l *modelList) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tSIZE\tWHERE\tHELD\tUNIQUE\tSHARED")
	sort.Slice(l.Data, func(i, j int) bool { return l.Data[i].ID < l.Data[j].ID })
	for _, m := range l.Data {
		name := m.ID
		if m.Default {
			name += " (default)"
		}
		if len(m.Residency) == 0 {
			fmt.Fprintf(tw, "%s\t%s\tdisk\t-\t-\t-\n", name, size(m.Bytes))
			continue
		}
		for i, r := range m.Residency {
			var shared []string
			for _, s := range r.Shared {
				shared = append(shared, fmt.Sprintf("%s %s with %s", s.Kind, size(s.Bytes), strings.Join(s.With, ",")))
			}
			if len(shared) == 0 {
				shared = []string{"-"}
			}
			if i > 0 {
				name = ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s %s (%s)\t%s\t%s\t%s\n", name, size(m.Bytes), r.Worker, r.Tier, r.Device,
				size(r.Bytes), size(r.UniqueBytes), strings.Join(shared, "; "))
		}
	}
	if len(l.Memory) > 0 {
		fmt.Fprintln(tw, "\nWORKER\tDEVICE\tGPU\tHOST\tSAVED BY SHARING")
		for _, m := range l.Memory {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Worker, m.Device, size(m.GPUBytes), size(m.HostBytes), size(m.SavedBytes))
		}
	}
	return tw.Flush()
}

// size writes bytes in binary units.
func size(n int64) string { return config.ByteSize(n).Human() }
