package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/kiln-project/kiln/server/broker"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/server/tenants"
)

const tenantsUsage = `usage: kiln tenants <command> [flags]

commands:
  create NAME   create a tenant and print its first API key
  key NAME      add another API key to a tenant
  list          list tenants with their quotas
  revoke NAME   disable a tenant and all its keys
  quota NAME    show or change a tenant's quota (flags below)

flags (all commands): --data-dir DIR (default ./kiln-data) or --nats URL
quota flags (create, quota): --concurrent-jobs N --images-per-minute N
  --max-pixels N --max-steps N --max-n N
`

// runTenants manages tenants in the tenants bucket of the data directory
// (or of an external NATS server).
func runTenants(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fprintf(stderr, "%s", tenantsUsage)
		if len(args) == 0 {
			return usageError{fmt.Errorf("missing command")}
		}
		return flag.ErrHelp
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "create", "key", "list", "revoke", "quota":
	default:
		fprintf(stderr, "%s", tenantsUsage)
		return usageError{fmt.Errorf("unknown tenants command %q", sub)}
	}
	defaults, err := config.Default()
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("kiln tenants "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaults.DataDir, "data directory of the embedded store")
	natsURL := fs.String("nats", "", "URL of an external NATS server (instead of the data directory)")
	q := defaults.DefaultQuota
	set := map[string]*int{
		"concurrent-jobs": &q.ConcurrentJobs, "images-per-minute": &q.ImagesPerMinute,
		"max-pixels": &q.MaxPixels, "max-steps": &q.MaxSteps, "max-n": &q.MaxN,
	}
	if sub == "create" || sub == "quota" {
		for name, p := range set {
			fs.IntVar(p, name, *p, "quota: "+name)
		}
	}
	// Flags may come before or after the tenant name.
	var positional []string
	for {
		if err := fs.Parse(rest); err != nil {
			return usageError{err}
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	needName := sub != "list"
	if needName && len(positional) != 1 || !needName && len(positional) != 0 {
		return usageError{fmt.Errorf("%s takes %s", sub, map[bool]string{true: "one tenant name", false: "no arguments"}[needName])}
	}
	changed := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { changed[f.Name] = true })

	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	b, err := broker.Start(ctx, broker.Options{URL: *natsURL, DataDir: *dataDir, Name: "kiln-tenants"})
	if err != nil {
		return err
	}
	defer b.Close()
	st, err := tenants.Open(ctx, b.JS, 1)
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		t, key, err := st.Create(ctx, positional[0], q)
		if err != nil {
			return err
		}
		fprintf(stderr, "created tenant %s (concurrent_jobs=%d images_per_minute=%d max_pixels=%d max_steps=%d max_n=%d)\n",
			t.ID, q.ConcurrentJobs, q.ImagesPerMinute, q.MaxPixels, q.MaxSteps, q.MaxN)
		fprintf(stderr, "its API key follows; it is shown only once:\n")
		fprintf(stdout, "%s\n", key)
	case "key":
		key, err := st.NewKey(ctx, positional[0])
		if err != nil {
			return err
		}
		fprintf(stdout, "%s\n", key)
	case "list":
		list, keys, err := st.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TENANT\tSTATE\tKEYS\tCONCURRENT\tIMAGES/MIN\tMAX_PIXELS\tMAX_STEPS\tMAX_N\tCREATED")
		for _, t := range list {
			state := "active"
			if t.Revoked {
				state = "revoked"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", t.ID, state, keys[t.ID], t.Quota.ConcurrentJobs,
				t.Quota.ImagesPerMinute, t.Quota.MaxPixels, t.Quota.MaxSteps, t.Quota.MaxN, t.CreatedAt.Format(time.RFC3339))
		}
		return tw.Flush()
	case "revoke":
		if err := st.Revoke(ctx, positional[0]); err != nil {
			return err
		}
		fprintf(stderr, "revoked tenant %s and its keys\n", positional[0])
	case "quota":
		t, err := st.Get(ctx, positional[0])
		if err != nil {
			return err
		}
		if len(changed) > 0 {
			nq := t.Quota
			for name := range set {
				if changed[name] {
					switch name {
					case "concurrent-jobs":
						nq.ConcurrentJobs = q.ConcurrentJobs
					case "images-per-minute":
						nq.ImagesPerMinute = q.ImagesPerMinute
					case "max-pixels":
						nq.MaxPixels = q.MaxPixels
					case "max-steps":
						nq.MaxSteps = q.MaxSteps
					case "max-n":
						nq.MaxN = q.MaxN
					}
				}
			}
			if t, err = st.SetQuota(ctx, t.ID, nq); err != nil {
				return err
			}
		}
		fprintf(stdout, "%s: concurrent_jobs=%d images_per_minute=%d max_pixels=%d max_steps=%d max_n=%d\n", t.ID,
			t.Quota.ConcurrentJobs, t.Quota.ImagesPerMinute, t.Quota.MaxPixels, t.Quota.MaxSteps, t.Quota.MaxN)
	default:
		fprintf(stderr, "%s", tenantsUsage)
		return usageError{fmt.Errorf("unknown tenants command %q", sub)}
	}
	return nil
}
