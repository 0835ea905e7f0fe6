package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kiln-project/kiln/gateway/api"
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
  quota NAME    show or change a tenant's quota, weight and quality (flags below)

A running server is managed through its admin API: --server URL (or
$KILN_SERVER) with the admin key (--admin-key, --admin-key-file or
$KILN_ADMIN_KEY). When no server answers there, or none is named and none
holds the data directory, the tenants bucket is changed directly:
--data-dir DIR (default ./kiln-data) or --nats URL.

flags (create, quota): --concurrent-jobs N --images-per-minute N
  --max-pixels N --max-steps N --max-n N --weight W --quality fixed|adaptive
`

// tenantAdmin is where tenants are managed: a running server's admin API
// or the tenants bucket itself.
type tenantAdmin interface {
	create(ctx context.Context, id string, q config.Quota, patch api.QuotaPatch, st tenants.Settings) (*tenants.Tenant, string, error)
	newKey(ctx context.Context, id string) (string, error)
	list(ctx context.Context) ([]tenants.Tenant, map[string]int, error)
	revoke(ctx context.Context, id string) error
	change(ctx context.Context, id string, patch api.QuotaPatch, st tenants.Settings) (*tenants.Tenant, error)
}

// storeAdmin manages the tenants bucket directly.
type storeAdmin struct{ st *tenants.Store }

func (a storeAdmin) create(ctx context.Context, id string, q config.Quota, _ api.QuotaPatch, st tenants.Settings) (*tenants.Tenant, string, error) {
	if err := st.Validate(); err != nil {
		return nil, "", err
	}
	t, key, err := a.st.Create(ctx, id, q)
	if err != nil || (st.Weight == nil && st.Quality == nil) {
		return t, key, err
	}
	t, err = a.st.SetSettings(ctx, id, st)
	return t, key, err
}

func (a storeAdmin) newKey(ctx context.Context, id string) (string, error) {
	return a.st.NewKey(ctx, id)
}

func (a storeAdmin) list(ctx context.Context) ([]tenants.Tenant, map[string]int, error) {
	return a.st.List(ctx)
}

func (a storeAdmin) revoke(ctx context.Context, id string) error { return a.st.Revoke(ctx, id) }

func (a storeAdmin) change(ctx context.Context, id string, patch api.QuotaPatch, st tenants.Settings) (*tenants.Tenant, error) {
	t, err := a.st.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if q := patch.Apply(t.Quota); q != t.Quota {
		if t, err = a.st.SetQuota(ctx, id, q); err != nil {
			return nil, err
		}
	}
	if st.Weight != nil || st.Quality != nil {
		return a.st.SetSettings(ctx, id, st)
	}
	return t, nil
}

// runTenants manages tenants through a running server's admin API or in
// the tenants bucket of the data directory (or of an external NATS
// server).
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
	server := fs.String("server", os.Getenv("KILN_SERVER"), "URL of a running kiln server to manage through its admin API")
	adminKey := fs.String("admin-key", os.Getenv("KILN_ADMIN_KEY"), "the server's admin key")
	adminKeyFile := fs.String("admin-key-file", "", "file holding the server's admin key")
	q := defaults.DefaultQuota
	set := map[string]*int{
		"concurrent-jobs": &q.ConcurrentJobs, "images-per-minute": &q.ImagesPerMinute,
		"max-pixels": &q.MaxPixels, "max-steps": &q.MaxSteps, "max-n": &q.MaxN,
	}
	var weight float64
	var quality string
	if sub == "create" || sub == "quota" {
		for name, p := range set {
			fs.IntVar(p, name, *p, "quota: "+name)
		}
		fs.Float64Var(&weight, "weight", 1, "fair-queuing weight (share of the workers under contention)")
		fs.StringVar(&quality, "quality", "fixed", "fixed, or adaptive (adaptive quality may adjust requests under load)")
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
	var patch api.QuotaPatch
	for name, p := range map[string]**int{"concurrent-jobs": &patch.ConcurrentJobs, "images-per-minute": &patch.ImagesPerMinute,
		"max-pixels": &patch.MaxPixels, "max-steps": &patch.MaxSteps, "max-n": &patch.MaxN} {
		if changed[name] {
			*p = set[name]
		}
	}
	var settings tenants.Settings
	if changed["weight"] {
		settings.Weight = &weight
	}
	if changed["quality"] {
		settings.Quality = &quality
	}

	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	key := func() (string, error) {
		if *adminKeyFile != "" {
			data, err := os.ReadFile(*adminKeyFile)
			if err != nil {
				return "", fmt.Errorf("admin key file: %w", err)
			}
			return strings.TrimSpace(string(data)), nil
		}
		return *adminKey, nil
	}
	var admin tenantAdmin
	if *server != "" && *natsURL == "" {
		if admin, err = serverAdmin(ctx, *server, key, stderr); err != nil {
			return err
		}
	}
	if admin == nil {
		b, err := broker.Start(ctx, broker.Options{URL: *natsURL, DataDir: *dataDir, Name: "kiln-tenants"})
		if errors.Is(err, broker.ErrDataDirLocked) && *server == "" {
			// A server holds the data directory: reach it where the
			// configuration says it listens.
			a, serr := serverAdmin(ctx, "http://"+defaults.Listen, key, stderr)
			if serr != nil || a == nil {
				return fmt.Errorf("%w; to manage the running server, pass --server URL and its admin key", err)
			}
			admin = a
		} else if err != nil {
			return err
		} else {
			defer b.Close()
			st, err := tenants.Open(ctx, b.JS, 1)
			if err != nil {
				return err
			}
			admin = storeAdmin{st}
		}
	}
	return tenantsCommand(ctx, admin, sub, positional, q, patch, settings, stdout, stderr)
}

// tenantsCommand runs one command against admin.
func tenantsCommand(ctx context.Context, admin tenantAdmin, sub string, positional []string, q config.Quota, patch api.QuotaPatch,
	settings tenants.Settings, stdout, stderr io.Writer) error {
	switch sub {
	case "create":
		t, key, err := admin.create(ctx, positional[0], q, patch, settings)
		if err != nil {
			return err
		}
		fprintf(stderr, "created tenant %s (concurrent_jobs=%d images_per_minute=%d max_pixels=%d max_steps=%d max_n=%d)\n",
			t.ID, t.Quota.ConcurrentJobs, t.Quota.ImagesPerMinute, t.Quota.MaxPixels, t.Quota.MaxSteps, t.Quota.MaxN)
		fprintf(stderr, "its API key follows; it is shown only once:\n")
		fprintf(stdout, "%s\n", key)
	case "key":
		key, err := admin.newKey(ctx, positional[0])
		if err != nil {
			return err
		}
		fprintf(stdout, "%s\n", key)
	case "list":
		list, keys, err := admin.list(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TENANT\tSTATE\tKEYS\tCONCURRENT\tIMAGES/MIN\tMAX_PIXELS\tMAX_STEPS\tMAX_N\tWEIGHT\tQUALITY\tCREATED")
		for _, t := range list {
			state := "active"
			if t.Revoked {
				state = "revoked"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%g\t%s\t%s\n", t.ID, state, keys[t.ID], t.Quota.ConcurrentJobs,
				t.Quota.ImagesPerMinute, t.Quota.MaxPixels, t.Quota.MaxSteps, t.Quota.MaxN, weightOf(t), qualityOf(t), t.CreatedAt.Format(time.RFC3339))
		}
		return tw.Flush()
	case "revoke":
		if err := admin.revoke(ctx, positional[0]); err != nil {
			return err
		}
		fprintf(stderr, "revoked tenant %s and its keys\n", positional[0])
	case "quota":
		t, err := admin.change(ctx, positional[0], patch, settings)
		if err != nil {
			return err
		}
		fprintf(stdout, "%s: concurrent_jobs=%d images_per_minute=%d max_pixels=%d max_steps=%d max_n=%d weight=%g quality=%s\n", t.ID,
			t.Quota.ConcurrentJobs, t.Quota.ImagesPerMinute, t.Quota.MaxPixels, t.Quota.MaxSteps, t.Quota.MaxN, weightOf(*t), qualityOf(*t))
	}
	return nil
}

func weightOf(t tenants.Tenant) float64 {
	if t.Weight > 0 {
		return t.Weight
	}
	return 1
}

func qualityOf(t tenants.Tenant) string {
	if t.Quality == "" {
		return "fixed"
	}
	return t.Quality
}
