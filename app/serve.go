// Package app runs `kiln serve`: it connects to NATS JetStream (an
// embedded server under the data directory by default), opens the job,
// tenant and image stores, and starts the roles the configuration asks
// for — the HTTP gateway, one worker per device — and shuts them down in
// order on SIGTERM: stop accepting, let running jobs finish or hand them
// back, flush the store.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-project/kiln/app/wasmadapter"
	"github.com/kiln-project/kiln/core/lora"
	"github.com/kiln-project/kiln/gateway/api"
	"github.com/kiln-project/kiln/gateway/auth"
	"github.com/kiln-project/kiln/gateway/urlsign"
	"github.com/kiln-project/kiln/gateway/ws"
	builtin "github.com/kiln-project/kiln/models"
	"github.com/kiln-project/kiln/server/adapterstate"
	"github.com/kiln-project/kiln/server/audit"
	"github.com/kiln-project/kiln/server/broker"
	"github.com/kiln-project/kiln/server/catalog"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/server/gpu"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/server/loralib"
	"github.com/kiln-project/kiln/server/metrics"
	"github.com/kiln-project/kiln/server/tenants"
	"github.com/kiln-project/kiln/worker"
	"github.com/kiln-project/kiln/worker/modelcache"
	"github.com/kiln-project/kiln/worker/sdengine"
	"github.com/kiln-project/kiln/worker/textcache"
)

// EngineFactory makes the engine of one worker on dev.
type EngineFactory func(dev Device, text *textcache.Cache) (worker.Engine, error)

// NativeEngine is the default EngineFactory: the native pipeline on the
// device's backend (on the CPU, a backend of its own per worker loop).
func NativeEngine(dev Device, text *textcache.Cache) (worker.Engine, error) {
	if !dev.GPU() {
		return sdengine.New("cpu", text)
	}
	return sdengine.NewOnBackend(dev.Name, dev.Backend, text)
}

// tuningEngine is an engine that keeps its device's kernel choices in a
// folder and tunes new shapes between jobs (sdengine on a GPU).
type tuningEngine interface {
	UseTuningDir(dir string, log *slog.Logger) (int, error)
}

// Options configure Start.
type Options struct {
	Config *config.Config
	Logger *slog.Logger
	// NewEngine makes worker engines; nil uses the native pipeline.
	NewEngine EngineFactory
	// SelectDevices opens the workers' devices; nil uses SelectDevices
	// (CUDA GPUs, else the CPU).
	SelectDevices DeviceSelector
	// Web serves the browser client at / (nil: none).
	Web http.Handler
	// Quality is the optional quality policy of the gateway.
	Quality api.QualityPolicy
	// Scheduler and Eviction are optional worker policies.
	Scheduler worker.Scheduler
	Eviction  modelcache.Policy
	// Post post-processes images (nil: the Wasm node chains).
	Post worker.PostProcessor
	// Wasm adds pre-processing nodes and the module upload API to the
	// gateway (nil: the Wasm registry's).
	Wasm api.WasmHooks
	// NoWasm runs without the Wasm host: no node chains or uploads, and
	// the Go defaults for every policy left nil.
	NoWasm bool
}

// Instance is a running server.
type Instance struct {
	cfg    *config.Config
	log    *slog.Logger
	broker *broker.Broker
	gpu    *gpu.Monitor
	text   *textcache.Cache
	// library is the installed LoRAs and embeddings (<models_dir>/loras,
	// <models_dir>/embeddings).
	library *loralib.Library
	// layouts are the worker engines, asked for models' LoRA layouts when
	// a tenant uploads a LoRA (set once the workers start).
	layouts atomic.Pointer[[]worker.Engine]

	api       *api.Server
	wasm      *wasmadapter.Wasm
	tenants   *tenants.Store
	jobs      *jobs.Store
	http      *http.Server
	admin     *http.Server
	adminAddr string
	addr      string
	runStop   context.CancelFunc
	runDone   sync.WaitGroup

	workers    []*worker.Worker
	devices    []Device
	workerStop context.CancelFunc
	// placementStop ends the placement board's heartbeat subscription.
	placementStop func()
	workerDone    sync.WaitGroup

	stopOnce sync.Once
	stopErr  error
}

// adminKey sets up the admin API's key: the one in admin_key_file or
// $KILN_ADMIN_KEY when given, else one made at the first start and logged
// that once (only its hash is stored).
func (in *Instance) adminKey(ctx context.Context, ts *tenants.Store) error {
	key, source := os.Getenv("KILN_ADMIN_KEY"), "environment"
	if f := in.cfg.AdminKeyFile; f != "" {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("serve: admin_key_file: %w", err)
		}
		key, source = strings.TrimSpace(string(data)), "file "+f
	}
	if key != "" {
		if err := ts.SetAdminKey(ctx, key, source); err != nil {
			return fmt.Errorf("serve: admin key from %s: %w", source, err)
		}
		in.log.Info("admin key configured", "from", source)
		return nil
	}
	created, err := ts.EnsureAdminKey(ctx)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if created != "" {
		in.log.Warn("admin key created for the admin API (/v1/admin, `kiln tenants --server`); it is shown only this once: store it, "+
			"or set admin_key_file or KILN_ADMIN_KEY", "admin_key", created)
	}
	return nil
}

// Addr returns the HTTP listener's address ("" without one).
func (in *Instance) Addr() string { return in.addr }

// AdminAddr returns the admin (pprof) listener's address ("" when off).
func (in *Instance) AdminAddr() string { return in.adminAddr }

// NATSURL returns the URL on which the embedded NATS server accepts other
// processes ("" without a listener).
func (in *Instance) NATSURL() string { return in.broker.ClientURL() }

// Hub returns the gateway's WebSocket hub (gateway roles only, else nil).
func (in *Instance) Hub() *ws.Hub {
	if in.api == nil {
		return nil
	}
	return in.api.Hub()
}

// Routes returns the gateway's API routes (gateway roles only, else nil).
func (in *Instance) Routes() []api.Route {
	if in.api == nil {
		return nil
	}
	return in.api.Routes()
}

// Jobs returns the job store.
func (in *Instance) Jobs() *jobs.Store { return in.jobs }

// Tenants returns the tenant store (gateway roles only, else nil).
func (in *Instance) Tenants() *tenants.Store { return in.tenants }

// Workers returns the workers of this process.
func (in *Instance) Workers() []*worker.Worker { return in.workers }

// Start brings the server up and returns once it serves.
func Start(ctx context.Context, o Options) (in *Instance, err error) {
	cfg := o.Config
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.NewEngine == nil {
		o.NewEngine = NativeEngine
	}
	if o.SelectDevices == nil {
		o.SelectDevices = SelectDevices
	}
	inst := &Instance{cfg: cfg, log: log}
	in = inst
	defer func() {
		if err != nil {
			inst.Stop(context.Background())
		}
	}()

	reg := metrics.NewRegistry()
	reg.RegisterProcess()
	in.gpu = gpu.Open()
	if in.gpu.Available() {
		log.Info("NVML found: GPU metrics enabled")
	}
	registerGPU(reg, in.gpu)

	in.broker, err = broker.Start(ctx, broker.Options{URL: cfg.NATS, DataDir: cfg.DataDir, Listen: cfg.NATSListen,
		Name: "kiln-" + cfg.Role, Logger: log})
	if err != nil {
		return nil, err
	}
	if u := in.broker.ClientURL(); u != "" {
		log.Info("embedded NATS accepts connections", "url", u)
	}
	store, err := jobs.Open(ctx, in.broker.JS, jobs.Options{Attempts: cfg.JobAttempts, AckWait: cfg.AckWait.D(),
		Retention: cfg.JobRetention.D()})
	if err != nil {
		return nil, err
	}
	in.jobs = store
	modelsDir := cfg.ModelsDir
	if modelsDir == "" && cfg.DataDir != "" {
		modelsDir = filepath.Join(cfg.DataDir, "models")
	}
	reg2 := catalog.New(cfg.Models, modelsDir, cfg.DefaultModel)
	in.library = loralib.New(modelsDir)
	reg2.AllowSynthetic(cfg.SyntheticModels)
	if cfg.BuiltinModel {
		if _, named := cfg.Models[builtin.BuiltinName]; named {
			log.Info("the configured model replaces the built-in one", "model", builtin.BuiltinName)
		} else if p, err := builtin.BuiltinPath(); err != nil {
			log.Warn("the built-in model is not available", "model", builtin.BuiltinName, "err", err)
		} else {
			reg2.SetBuiltin(builtin.BuiltinName, p)
		}
	}
	reg2.Refresh()
	for _, p := range reg2.Problems() {
		log.Warn("model skipped", "problem", p)
	}
	if len(reg2.List()) == 0 {
		log.Warn("no model is installed: jobs will be refused until one is given with --model name=path or placed in the models folder (or --builtin-model is on)", "models_dir", modelsDir)
	} else {
		names := []string{}
		for _, m := range reg2.List() {
			names = append(names, m.Name)
		}
		log.Info("models", "available", names, "default", reg2.Default())
	}
	text, err := textcache.New(int64(cfg.TextCacheBytes))
	if err != nil {
		return nil, err
	}
	in.text = text
	if err := in.startWasm(ctx, &o, reg); err != nil {
		return nil, err
	}
	reg.Collect(func(emit func(name, help, typ string, labels, values []string, v float64)) {
		h, m, r := text.Stats()
		emit("kiln_cache_hits_total", "Cache hits by cache.", "counter", []string{"cache"}, []string{"text_encoder"}, float64(h))
		emit("kiln_cache_misses_total", "Cache misses by cache.", "counter", []string{"cache"}, []string{"text_encoder"}, float64(m))
		emit("kiln_cache_hit_ratio", "Cache hit ratio since start, by cache.", "gauge", []string{"cache"}, []string{"text_encoder"}, r)
	})

	if cfg.Role == config.RoleAll || cfg.Role == config.RoleGateway {
		if err := in.startGateway(ctx, o, reg, store, reg2); err != nil {
			return nil, err
		}
	}
	if cfg.Role == config.RoleAll || cfg.Role == config.RoleWorker {
		if err := in.startWorkers(o, reg, store, reg2); err != nil {
			return nil, err
		}
		if cfg.Role == config.RoleWorker && cfg.Listen != "" {
			if err := in.startProbeListener(reg); err != nil {
				return nil, err
			}
		}
	}
	if cfg.AdminListen != "" {
		if err := in.startAdmin(); err != nil {
			return nil, err
		}
	}
	return in, nil
}

func (in *Instance) startGateway(ctx context.Context, o Options, reg *metrics.Registry, store *jobs.Store, mreg *catalog.Registry) error {
	cfg := in.cfg
	ts, err := tenants.Open(ctx, in.broker.JS, 1)
	if err != nil {
		return err
	}
	in.tenants = ts
	signer, err := urlsign.Load(ctx, in.broker.JS, 1)
	if err != nil {
		return err
	}
	profiles, err := config.Profiles()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("serve: listen %s: %w", cfg.Listen, err)
	}
	in.addr = ln.Addr().String()
	loopback := auth.IsLoopback(in.addr)
	if !loopback {
		list, _, err := ts.List(ctx)
		if err != nil {
			ln.Close()
			return err
		}
		live := 0
		for _, t := range list {
			if !t.Revoked {
				live++
			}
		}
		if live == 0 {
			ln.Close()
			return fmt.Errorf("serve: refusing to listen on %s (not loopback) without any tenant: create one with `kiln tenants create NAME --data-dir %s`, or listen on 127.0.0.1", in.addr, cfg.DataDir)
		}
	}
	mode, err := ts.DecideMode(ctx, cfg.AuthMode, loopback)
	if err != nil {
		ln.Close()
		return fmt.Errorf("serve: %w", err)
	}
	in.log.Info("auth mode", "mode", mode.Mode, "reason", mode.Reason)
	if err := in.adminKey(ctx, ts); err != nil {
		ln.Close()
		return err
	}
	auditLog, err := audit.Open(ctx, in.broker.JS, cfg.AuditRetention.D(), 1)
	if err != nil {
		ln.Close()
		return err
	}
	adapters, err := adapterstate.Open(ctx, in.broker.JS, 0, 1)
	if err != nil {
		ln.Close()
		return err
	}
	in.api, err = api.New(api.Options{Config: cfg, Store: store, Tenants: ts, Conn: in.broker.Conn, Models: mreg, Library: in.library, LoRAModules: in.loraModules,
		Profiles: profiles, Registry: reg, Signer: signer, GPU: in.gpu, Logger: in.log, AllowLocal: loopback,
		Quality: o.Quality, Web: o.Web, Wasm: o.Wasm, Audit: auditLog, State: adapters})
	if err != nil {
		ln.Close()
		return err
	}
	runCtx, stop := context.WithCancel(context.Background())
	in.runStop = stop
	in.runDone.Add(2)
	go func() {
		defer in.runDone.Done()
		if err := in.api.Run(runCtx); err != nil {
			in.log.Error("gateway background work stopped", "err", err)
		}
	}()
	go func() { // re-enqueue jobs a crash left without a queue message; refresh models
		defer in.runDone.Done()
		t := time.NewTicker(orphanCheckInterval(cfg))
		defer t.Stop()
		// Jobs left "running" by a worker that is gone go back to the
		// queue once this gateway has listened to heartbeats long enough
		// to know which workers live.
		listening := time.Now()
		orphanGrace := max(2*cfg.AckWait.D(), 3*cfg.MetricsInterval.D()+time.Second)
		heard := func(worker string) bool { return in.api.WorkerHeardWithin(worker, orphanGrace) }
		for {
			if n, err := store.Reconcile(runCtx, time.Minute); err != nil && runCtx.Err() == nil {
				in.log.Warn("reconcile failed", "err", err)
			} else if n > 0 {
				in.log.Warn("re-enqueued jobs that had lost their queue message", "jobs", n)
			}
			if time.Since(listening) > orphanGrace {
				if n, err := store.RepairOrphans(runCtx, heard, orphanGrace); err != nil && runCtx.Err() == nil {
					in.log.Warn("repairing orphaned jobs failed", "err", err)
				} else if n > 0 {
					in.log.Warn("put back jobs whose worker is gone", "jobs", n)
				}
			}
			mreg.Refresh()
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
			}
		}
	}()
	in.http = &http.Server{Handler: in.api.Handler(), ReadHeaderTimeout: cfg.ReadHeaderTimeout.D(),
		ReadTimeout: cfg.ReadTimeout.D(), IdleTimeout: cfg.IdleTimeout.D(), MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(in.log.Handler(), slog.LevelWarn)}
	go func() {
		if err := in.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			in.log.Error("http server failed", "err", err)
		}
	}()
	// Wait until tenants and job records are mirrored, so the first
	// request sees the right tenants.
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for in.api.Ready() != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("serve: gateway not ready: %v", in.api.Ready())
		case <-time.After(10 * time.Millisecond):
		}
	}
	authDesc := "API keys required"
	if in.api.Auth().Keyless() {
		authDesc = "keyless local tenant (any bearer or none)"
	}
	in.log.Info("listening", "addr", in.addr, "url", "http://"+in.addr, "auth", authDesc)
	return nil
}

func (in *Instance) startWorkers(o Options, reg *metrics.Registry, store *jobs.Store, mreg *catalog.Registry) error {
	cfg := in.cfg
	hw, err := config.HardwareProfiles()
	if err != nil {
		return err
	}
	var fixed *config.Hardware
	if cfg.HardwareProfile != "auto" {
		p, ok := hw[cfg.HardwareProfile]
		if !ok {
			return fmt.Errorf("serve: unknown hardware profile %q", cfg.HardwareProfile)
		}
		fixed = &p
	}
	devs, reason, err := o.SelectDevices(cfg.Device)
	if err != nil {
		return fmt.Errorf("serve: device %s: %w", cfg.Device, err)
	}
	in.devices = devs
	names := make([]string, len(devs))
	for i, d := range devs {
		names[i] = d.Name
	}
	in.log.Info("compute devices", "devices", names, "reason", reason)

	// One worker per GPU; on the CPU, `workers` loops share the machine.
	type slot struct {
		dev     Device
		profile config.Hardware
		budget  int64
	}
	gpus := in.gpu.Read()
	var slots []slot
	for _, d := range devs {
		total, gpuName := gpu.SystemMemory(), ""
		if d.GPU() {
			total, gpuName = d.Memory, d.GPUName
			if i := ordinal(d.Name); i >= 0 && i < len(gpus) && gpus[i].MemoryTotal > 0 {
				total, gpuName = gpus[i].MemoryTotal, gpus[i].Name // NVML's reading, as the metrics show it
			}
		}
		if total <= 0 {
			total = 8 << 30
		}
		profile := config.Hardware{Name: "fallback", MemoryBudget: config.Budget{Percent: 80}, MaxBatch: 1}
		if fixed != nil {
			profile = *fixed
		} else if p, ok := config.MatchHardware(hw, gpuName, total); ok {
			profile = p
		}
		budget := cfg.MemoryBudget.Resolve(total, profile.MemoryBudget)
		loops := 1
		if !d.GPU() {
			loops = cfg.Workers
		}
		for i := 0; i < loops; i++ {
			slots = append(slots, slot{dev: d, profile: profile, budget: budget / int64(loops)})
		}
		in.log.Info("workers", "device", d.Name, "count", loops, "hardware_profile", profile.Name,
			"memory_budget", config.ByteSize(budget).Human(), "max_batch", profile.MaxBatch)
	}
	if devs[0].GPU() && cfg.Workers > 1 {
		in.log.Info("workers applies to the CPU; GPU hosts run one worker per GPU", "workers", cfg.Workers, "gpus", len(devs))
	}
	wm := worker.NewMetrics(reg)
	caches := make([]*modelcache.Cache, 0, len(slots))
	engines := make([]worker.Engine, 0, len(slots))
	nGPU := 0
	for _, sl := range slots {
		if sl.dev.GPU() {
			nGPU++
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	in.workerStop = stop
	placer, err := in.startPlacement()
	if err != nil {
		return err
	}
	for i, sl := range slots {
		eng, err := o.NewEngine(sl.dev, in.text)
		if err != nil {
			return err
		}
		if le, ok := eng.(interface{ SetLibrary(*loralib.Library) }); ok {
			le.SetLibrary(in.library)
		}
		engines = append(engines, eng)
		ready := slices.Clone(engines)
		in.layouts.Store(&ready)
		if t, ok := eng.(tuningEngine); ok && cfg.DataDir != "" {
			dir := filepath.Join(cfg.DataDir, "tuning")
			n, err := t.UseTuningDir(dir, in.log)
			if err != nil {
				in.log.Warn("stored kernel tuning not used", "device", sl.dev.Name, "err", err)
			}
			if sl.dev.GPU() {
				in.log.Info("kernel tuning", "device", sl.dev.Name, "stored_choices", n, "dir", dir,
					"note", "new shapes run on defaults and are tuned between jobs")
			}
		}
		cache := modelcache.New(sl.budget, o.Eviction)
		caches = append(caches, cache)
		name := sl.dev.Name
		if !sl.dev.GPU() && len(slots) > 1 {
			name = fmt.Sprintf("cpu#%d", i)
		}
		mem, err := newMemory(name, sl.dev.Backend, sl.budget, hostBudget(cfg.HostMemoryBudget, gpu.SystemMemory(), nGPU, sl.dev.GPU()),
			cfg.DataDir, cache, eng, func(id string) (string, bool) {
				m, ok := mreg.Get(id)
				return m.Path, ok
			})
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		reg.Collect(mem.Collect)
		if ev, ok := o.Eviction.(*wasmadapter.Eviction); ok {
			// The eviction policy offloads only into this GPU's free host memory.
			per := *ev
			per.HostFree = mem.HostFreeBytes
			per.Memory = mem
			cache.SetPolicy(&per)
		}
		sched, window := in.wasmScheduler(o.Scheduler, sl.profile.MaxBatch, mem)
		w, err := worker.New(worker.Options{Store: store, Conn: in.broker.Conn, Engine: eng, Models: mreg, Cache: cache, Memory: mem,
			Scheduler: sched, Window: window, Post: o.Post, Metrics: wm, Logger: in.log, PreviewSize: cfg.PreviewSize,
			PreviewQuality: cfg.PreviewQuality, PreviewEvery: cfg.PreviewEvery, HeartbeatInterval: cfg.MetricsInterval.D(),
			ShutdownTimeout: cfg.ShutdownTimeout.D(), GPUs: ownGPU(in.gpu.Read, sl.dev), Placement: placer})
		if err != nil {
			return err
		}
		in.workers = append(in.workers, w)
		in.workerDone.Add(1)
		go func() {
			defer in.workerDone.Done()
			if err := w.Run(ctx); err != nil {
				in.log.Error("worker stopped", "worker", w.ID(), "err", err)
			}
		}()
	}
	reg.Collect(func(emit func(name, help, typ string, labels, values []string, v float64)) {
		for i, e := range engines {
			le, ok := e.(interface{ LoRAStats() sdengine.LoRAStats })
			if !ok {
				continue
			}
			s := le.LoRAStats()
			l, v := []string{"worker"}, []string{in.workers[i].ID()}
			emit("kiln_lora_cache_entries", "Parsed LoRAs and embeddings held by the worker's models.", "gauge", l, v, float64(s.Entries))
			emit("kiln_lora_cache_bytes", "Host bytes of the parsed LoRAs and embeddings.", "gauge", l, v, float64(s.Bytes))
			emit("kiln_lora_cache_hits_total", "LoRA/embedding lookups answered by the cache.", "counter", l, v, float64(s.Hits))
			emit("kiln_lora_cache_misses_total", "LoRA/embedding files parsed.", "counter", l, v, float64(s.Misses))
			emit("kiln_lora_cache_evictions_total", "Parsed LoRAs and embeddings dropped for room.", "counter", l, v, float64(s.Evictions))
		}
		for i, c := range caches {
			s := c.Stats()
			l, v := []string{"worker", "device"}, []string{in.workers[i].ID(), slots[i].dev.Name}
			emit("kiln_model_cache_bytes", "Bytes held by resident catalog.", "gauge", l, v, float64(s.Bytes))
			emit("kiln_model_cache_budget_bytes", "Memory budget of the model cache.", "gauge", l, v, float64(s.Budget))
			emit("kiln_model_cache_resident", "Resident catalog.", "gauge", l, v, float64(s.Resident))
			emit("kiln_model_loads_total", "Model loads (cache misses).", "counter", l, v, float64(s.Loads))
			emit("kiln_model_evictions_total", "Models dropped to make room.", "counter", l, v, float64(s.Evictions))
			emit("kiln_model_policy_fallbacks_total", "Eviction policy answers replaced by LRU.", "counter", l, v, float64(s.PolicyFallbacks))
			emit("kiln_model_offloads_total", "Models moved from the device to pinned host memory.", "counter", l, v, float64(s.Offloads))
			emit("kiln_model_restores_total", "Offloaded models copied back to the device (no reload).", "counter", l, v, float64(s.Restores))
			emit("kiln_model_demotions_total", "Offloaded models dropped to make room in host memory.", "counter", l, v, float64(s.Demotions))
			emit("kiln_model_cache_host_bytes", "Bytes held by models offloaded to pinned host memory.", "gauge", l, v, float64(s.HostBytes))
			emit("kiln_model_cache_offloaded", "Models offloaded to pinned host memory.", "gauge", l, v, float64(s.Offloaded))
		}
	})
	return nil
}

// startProbeListener serves /healthz, /readyz and /metrics for a
// worker-only process.
func (in *Instance) startProbeListener(reg *metrics.Registry) error {
	ln, err := net.Listen("tcp", in.cfg.Listen)
	if err != nil {
		return fmt.Errorf("serve: listen %s: %w", in.cfg.Listen, err)
	}
	in.addr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if !in.broker.Conn.IsConnected() {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"status":"unavailable","reason":"not connected to NATS"}` + "\n"))
			return
		}
		fmt.Fprintf(w, `{"status":"ready","workers":%d}`+"\n", len(in.workers))
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		reg.WriteTo(w)
	})
	in.http = &http.Server{Handler: mux, ReadHeaderTimeout: in.cfg.ReadHeaderTimeout.D()}
	go in.http.Serve(ln)
	in.log.Info("worker probes listening", "addr", in.addr)
	return nil
}

func (in *Instance) startAdmin() error {
	ln, err := net.Listen("tcp", in.cfg.AdminListen)
	if err != nil {
		return fmt.Errorf("serve: admin listen %s: %w", in.cfg.AdminListen, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	in.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	in.adminAddr = ln.Addr().String()
	go in.admin.Serve(ln)
	in.log.Info("admin listener with pprof", "addr", in.adminAddr)
	return nil
}

// Stop shuts down in order: refuse new work, let running jobs finish
// within the shutdown timeout (or hand them back), close connections and
// flush the store. It is safe to call more than once.
func (in *Instance) Stop(ctx context.Context) error {
	in.stopOnce.Do(func() { in.stopErr = in.stop(ctx) })
	return in.stopErr
}

func (in *Instance) stop(ctx context.Context) error {
	grace := in.cfg.ShutdownTimeout.D() + 5*time.Second
	sctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	var wg sync.WaitGroup
	if in.api != nil {
		in.api.Close() // WebSockets go away first: they never end by themselves
	}
	if in.http != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := in.http.Shutdown(sctx); err != nil {
				in.http.Close()
			}
		}()
	}
	if in.workerStop != nil {
		in.workerStop()
		wg.Add(1)
		go func() { defer wg.Done(); in.workerDone.Wait() }()
	}
	wg.Wait()
	if in.placementStop != nil {
		in.placementStop()
	}
	if err := closeDevices(in.devices); err != nil {
		in.log.Warn("releasing devices", "err", err)
	}
	if in.runStop != nil {
		in.runStop()
		in.runDone.Wait()
	}
	if in.admin != nil {
		in.admin.Close()
	}
	in.stopWasm(sctx)
	var err error
	if in.broker != nil {
		err = in.broker.Close()
	}
	if in.text != nil {
		in.text.Close()
	}
	in.gpu.Close()
	in.log.Info("stopped")
	return err
}

// orphanCheckInterval is how often the gateway reconciles job records with
// the queue and the live workers: every ack wait, between 5 s and 30 s.
func orphanCheckInterval(cfg *config.Config) time.Duration {
	return min(max(cfg.AckWait.D(), 5*time.Second), 30*time.Second)
}

// ordinal returns N of a "cuda:N" device name, or -1.
func ordinal(name string) int {
	var n int
	if _, err := fmt.Sscanf(name, "cuda:%d", &n); err != nil {
		return -1
	}
	return n
}

// registerGPU exposes NVML readings as metrics.
func registerGPU(reg *metrics.Registry, mon *gpu.Monitor) {
	reg.Collect(func(emit func(name, help, typ string, labels, values []string, v float64)) {
		for _, g := range mon.Read() {
			l, v := []string{"gpu", "name"}, []string{fmt.Sprint(g.Index), g.Name}
			emit("kiln_gpu_memory_used_bytes", "GPU memory in use (NVML).", "gauge", l, v, float64(g.MemoryUsed))
			emit("kiln_gpu_memory_total_bytes", "GPU memory (NVML).", "gauge", l, v, float64(g.MemoryTotal))
			emit("kiln_gpu_utilization_ratio", "GPU utilisation 0..1 (NVML).", "gauge", l, v, g.Utilization)
			emit("kiln_gpu_temperature_celsius", "GPU temperature (NVML).", "gauge", l, v, g.TemperatureC)
			emit("kiln_gpu_power_watts", "GPU power draw (NVML).", "gauge", l, v, g.PowerW)
		}
	})
}

// loraModules is the LoRA layout of model from the first of this
// instance's engines that has loaded it.
func (in *Instance) loraModules(model string) (lora.Modules, error) {
	engines := in.layouts.Load()
	if engines == nil {
		return nil, errors.New("this server runs no worker to read model layouts from")
	}
	for _, e := range *engines {
		if le, ok := e.(interface {
			LoRAModules(string) (lora.Modules, bool)
		}); ok {
			if mods, ok := le.LoRAModules(model); ok && len(mods) > 0 {
				return mods, nil
			}
		}
	}
	return nil, fmt.Errorf("model %q has not been loaded on this server yet (or takes no LoRAs); run one job on it, then upload again", model)
}
