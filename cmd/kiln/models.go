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
		ID           string `json:"id"`
		Bytes        int64  `json:"bytes"`
		Default      bool   `json:"default"`
		Builtin      bool   `json:"builtin"`
		Format       string `json:"format"`
		Family       string `json:"family"`
		NativeWidth  int    `json:"native_width"`
		NativeHeight int    `json:"native_height"`
		Residency    []struct {
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
// shares with other models by content hash. `kiln models show NAME` prints
// one model's details.
func runModels(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	show := ""
	if len(args) > 0 && args[0] == "show" {
		if len(args) < 2 || strings.HasPrefix(args[1], "-") {
			return usageError{fmt.Errorf("kiln models show NAME [flags]: the model's name is missing")}
		}
		show, args = args[1], args[2:]
	}
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
	if *asJSON && show == "" {
		_, err := stdout.Write(body)
		return err
	}
	var list modelList
	if err := json.Unmarshal(body, &list); err != nil {
		return fmt.Errorf("models: reading the answer: %w", err)
	}
	if show == "" {
		return printModels(stdout, &list)
	}
	for i := range list.Data {
		if list.Data[i].ID == show {
			one := list
			one.Data = list.Data[i : i+1]
			if *asJSON {
				return json.NewEncoder(stdout).Encode(one.Data[0])
			}
			return printModel(stdout, &one)
		}
	}
	var names []string
	for _, m := range list.Data {
		names = append(names, m.ID)
	}
	return fmt.Errorf("models: no model %q on the server (it has: %s)", show, strings.Join(names, ", "))
}

// printModel writes one model's details, then where it is held.
func printModel(w io.Writer, l *modelList) error {
	m := l.Data[0]
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name\t%s\n", m.ID)
	for _, kv := range [][2]string{{"family", m.Family}, {"format", m.Format}} {
		if kv[1] != "" {
			fmt.Fprintf(tw, "%s\t%s\n", kv[0], kv[1])
		}
	}
	if m.NativeWidth > 0 && m.NativeHeight > 0 {
		fmt.Fprintf(tw, "native size\t%dx%d\n", m.NativeWidth, m.NativeHeight)
	}
	fmt.Fprintf(tw, "size on disk\t%s\n", size(m.Bytes))
	fmt.Fprintf(tw, "default\t%v\n", m.Default)
	fmt.Fprintf(tw, "built in\t%v\n", m.Builtin)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	l.Memory = nil
	return printModels(w, l)
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
