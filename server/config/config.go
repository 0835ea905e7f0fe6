// Package config holds the configuration of `kiln serve`: the defaults
// embedded from configs/kiln.yaml, an optional YAML file on top (decoded
// strictly: unknown keys are errors naming the key) and command-line flags on
// top of both. It also loads the performance profiles (configs/profiles) and
// hardware profiles (configs/hardware).
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"os"
	"sort"
	"strings"

	yaml "go.yaml.in/yaml/v3"

	"github.com/kiln-project/kiln/configs"
)

// Roles a process can take.
const (
	RoleAll     = "all"
	RoleGateway = "gateway"
	RoleWorker  = "worker"
)

// Quota bounds what one tenant may do.
type Quota struct {
	// ConcurrentJobs is the number of queued or running jobs at once.
	ConcurrentJobs int `yaml:"concurrent_jobs" json:"concurrent_jobs"`
	// ImagesPerMinute is the rate of images requested (n summed over jobs).
	ImagesPerMinute int `yaml:"images_per_minute" json:"images_per_minute"`
	// MaxPixels caps width × height of one image.
	MaxPixels int `yaml:"max_pixels" json:"max_pixels"`
	// MaxSteps caps sampler steps.
	MaxSteps int `yaml:"max_steps" json:"max_steps"`
	// MaxN caps images per job.
	MaxN int `yaml:"max_n" json:"max_n"`
}

// Validate reports a quota with a non-positive limit.
func (q Quota) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{{"concurrent_jobs", q.ConcurrentJobs}, {"images_per_minute", q.ImagesPerMinute},
		{"max_pixels", q.MaxPixels}, {"max_steps", q.MaxSteps}, {"max_n", q.MaxN}} {
		if f.v <= 0 {
			return fmt.Errorf("quota %s must be positive, got %d", f.name, f.v)
		}
	}
	return nil
}

// Config is the whole configuration of `kiln serve`. The YAML key of each
// field is also the name of its flag with "_" written as "-".
type Config struct {
	Role                   string            `yaml:"role"`
	Listen                 string            `yaml:"listen"`
	AuthMode               string            `yaml:"auth_mode"`
	DataDir                string            `yaml:"data_dir"`
	NATS                   string            `yaml:"nats"`
	NATSListen             string            `yaml:"nats_listen"`
	Device                 string            `yaml:"device"`
	Workers                int               `yaml:"workers"`
	Placement              bool              `yaml:"placement"`
	MemoryBudget           Budget            `yaml:"memory_budget"`
	HostMemoryBudget       Budget            `yaml:"host_memory_budget"`
	HardwareProfile        string            `yaml:"hardware_profile"`
	Models                 map[string]string `yaml:"models"`
	BuiltinModel           bool              `yaml:"builtin_model"`
	SyntheticModels        bool              `yaml:"synthetic_models"`
	ModelsDir              string            `yaml:"models_dir"`
	DefaultModel           string            `yaml:"default_model"`
	DefaultProfile         string            `yaml:"default_profile"`
	AdminListen            string            `yaml:"admin_listen"`
	AdminKeyFile           string            `yaml:"admin_key_file"`
	AuditRetention         Duration          `yaml:"audit_retention"`
	CORSOrigins            []string          `yaml:"cors_origins"`
	LogLevel               string            `yaml:"log_level"`
	LogFormat              string            `yaml:"log_format"`
	MaxBodyBytes           ByteSize          `yaml:"max_body_bytes"`
	MaxLoRABytes           ByteSize          `yaml:"max_lora_bytes"`
	MaxImagePixels         int               `yaml:"max_image_pixels"`
	MaxImageDecodeBytes    ByteSize          `yaml:"max_image_decode_bytes"`
	ImageDecodeBudget      ByteSize          `yaml:"image_decode_budget"`
	ReadHeaderTimeout      Duration          `yaml:"read_header_timeout"`
	ReadTimeout            Duration          `yaml:"read_timeout"`
	IdleTimeout            Duration          `yaml:"idle_timeout"`
	SyncTimeout            Duration          `yaml:"sync_timeout"`
	MaxCPUJobTime          Duration          `yaml:"max_cpu_job_time"`
	CPUSpeedPrior          float64           `yaml:"cpu_speed_prior"`
	ShutdownTimeout        Duration          `yaml:"shutdown_timeout"`
	MaxWebSocketsPerTenant int               `yaml:"max_websockets_per_tenant"`
	WSSendQueue            int               `yaml:"ws_send_queue"`
	MetricsInterval        Duration          `yaml:"metrics_interval"`
	JobAttempts            int               `yaml:"job_attempts"`
	AckWait                Duration          `yaml:"ack_wait"`
	JobRetention           Duration          `yaml:"job_retention"`
	PlanCacheBytes         ByteSize          `yaml:"plan_cache_bytes"`
	TextCacheBytes         ByteSize          `yaml:"text_cache_bytes"`
	PreviewSize            int               `yaml:"preview_size"`
	PreviewQuality         int               `yaml:"preview_quality"`
	PreviewEvery           int               `yaml:"preview_every"`
	LocalQuota             Quota             `yaml:"local_quota"`
	DefaultQuota           Quota             `yaml:"default_quota"`
}

// Default returns the configuration in the embedded configs/kiln.yaml.
func Default() (*Config, error) {
	data, err := configs.FS.ReadFile("kiln.yaml")
	if err != nil {
		return nil, fmt.Errorf("config: embedded kiln.yaml: %w", err)
	}
	var c Config
	if err := decodeStrict(data, &c); err != nil {
		return nil, fmt.Errorf("config: embedded kiln.yaml: %w", err)
	}
	if c.Models == nil {
		c.Models = map[string]string{}
	}
	return &c, nil
}

// Bounds of a configuration document, checked on its node tree before it
// is decoded: the YAML decoder's duplicate-key check is quadratic in a
// mapping's size (32,000 keys took seconds; the config fuzz target
// stalled on such inputs), and anchors and aliases can multiply a small
// document, so Kiln's configs allow neither.
const (
	maxConfigBytes       = 1 << 20
	maxConfigNodes       = 20000
	maxConfigMappingKeys = 1000
)

// decodeStrict decodes one YAML document into out; unknown keys are errors.
func decodeStrict(data []byte, out any) error {
	if err := checkShape(data); err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file changes nothing
		}
		return err
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("more than one YAML document")
	}
	return nil
}

// checkShape parses data into a node tree (linear) and refuses documents
// over the size or node bounds, with anchors or aliases, or with a key
// repeated in one mapping.
func checkShape(data []byte) error {
	if len(data) > maxConfigBytes {
		return fmt.Errorf("%d bytes, the limit is %d", len(data), maxConfigBytes)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return err
	}
	nodes := 0
	var walk func(n *yaml.Node) error
	walk = func(n *yaml.Node) error {
		nodes++
		if nodes > maxConfigNodes {
			return fmt.Errorf("more than %d YAML nodes", maxConfigNodes)
		}
		if n.Kind == yaml.AliasNode || n.Anchor != "" {
			return fmt.Errorf("line %d: YAML anchors and aliases are not supported in configs", n.Line)
		}
		if n.Kind == yaml.MappingNode {
			if len(n.Content)/2 > maxConfigMappingKeys {
				return fmt.Errorf("line %d: a mapping of %d keys, the limit is %d", n.Line, len(n.Content)/2, maxConfigMappingKeys)
			}
			seen := make(map[string]int, len(n.Content)/2)
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				if k.Kind == yaml.ScalarNode {
					if line, dup := seen[k.Value]; dup {
						return fmt.Errorf("line %d: key %q already defined at line %d", k.Line, k.Value, line)
					}
					seen[k.Value] = k.Line
				}
			}
		}
		for _, c := range n.Content {
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(&doc)
}

// Merge decodes YAML data on top of c: keys present in data replace the
// current values, unknown keys are errors naming the key.
func (c *Config) Merge(data []byte) error {
	return decodeStrict(data, c)
}

// MergeFile reads a YAML file on top of c.
func (c *Config) MergeFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := c.Merge(data); err != nil {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	return nil
}

// Validate checks values that no type can.
func (c *Config) Validate() error {
	switch c.Role {
	case RoleAll, RoleGateway, RoleWorker:
	default:
		return fmt.Errorf("config: role %q: want all, gateway or worker", c.Role)
	}
	if c.Role != RoleWorker || c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return fmt.Errorf("config: listen %q: %w", c.Listen, err)
		}
	}
	if c.NATSListen != "" {
		if _, _, err := net.SplitHostPort(c.NATSListen); err != nil {
			return fmt.Errorf("config: nats_listen %q: %w", c.NATSListen, err)
		}
		if c.NATS != "" {
			return fmt.Errorf("config: nats_listen applies to the embedded server only; nats is set")
		}
	}
	if c.AdminListen != "" {
		if _, _, err := net.SplitHostPort(c.AdminListen); err != nil {
			return fmt.Errorf("config: admin_listen %q: %w", c.AdminListen, err)
		}
	}
	switch c.AuthMode {
	case "auto", "keyless", "keys":
	default:
		return fmt.Errorf("config: auth_mode %q: want auto, keyless or keys", c.AuthMode)
	}
	if c.DataDir == "" && c.NATS == "" {
		return fmt.Errorf("config: data_dir is empty")
	}
	if !validDevice(c.Device) {
		return fmt.Errorf("config: device %q: want auto, cpu, cuda or cuda:N", c.Device)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("config: log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("config: log_format %q: want text or json", c.LogFormat)
	}
	for name, v := range map[string]int{
		"workers": c.Workers, "max_image_pixels": c.MaxImagePixels,
		"max_websockets_per_tenant": c.MaxWebSocketsPerTenant, "ws_send_queue": c.WSSendQueue,
		"job_attempts": c.JobAttempts, "preview_size": c.PreviewSize,
	} {
		if v <= 0 {
			return fmt.Errorf("config: %s must be positive, got %d", name, v)
		}
	}
	if c.PreviewQuality < 1 || c.PreviewQuality > 100 {
		return fmt.Errorf("config: preview_quality must be in 1..100, got %d", c.PreviewQuality)
	}
	if c.PreviewEvery < 0 {
		return fmt.Errorf("config: preview_every must not be negative")
	}
	for name, v := range map[string]ByteSize{"max_body_bytes": c.MaxBodyBytes, "max_lora_bytes": c.MaxLoRABytes,
		"max_image_decode_bytes": c.MaxImageDecodeBytes, "image_decode_budget": c.ImageDecodeBudget,
		"plan_cache_bytes": c.PlanCacheBytes, "text_cache_bytes": c.TextCacheBytes} {
		if v <= 0 {
			return fmt.Errorf("config: %s must be positive", name)
		}
	}
	for name, v := range map[string]Duration{"ack_wait": c.AckWait, "metrics_interval": c.MetricsInterval,
		"job_retention": c.JobRetention, "sync_timeout": c.SyncTimeout, "audit_retention": c.AuditRetention} {
		if v <= 0 {
			return fmt.Errorf("config: %s must be positive", name)
		}
	}
	if c.ImageDecodeBudget < c.MaxImageDecodeBytes {
		return fmt.Errorf("config: image_decode_budget (%s) is smaller than max_image_decode_bytes (%s)", c.ImageDecodeBudget.Human(), c.MaxImageDecodeBytes.Human())
	}
	if c.CPUSpeedPrior < 0 || math.IsNaN(c.CPUSpeedPrior) || math.IsInf(c.CPUSpeedPrior, 0) {
		return fmt.Errorf("config: cpu_speed_prior must not be negative")
	}
	if c.AckWait.D().Seconds() < 1 {
		return fmt.Errorf("config: ack_wait must be at least 1s")
	}
	if err := c.LocalQuota.Validate(); err != nil {
		return fmt.Errorf("config: local_quota: %w", err)
	}
	if err := c.DefaultQuota.Validate(); err != nil {
		return fmt.Errorf("config: default_quota: %w", err)
	}
	for name, p := range c.Models {
		if err := ValidModelName(name); err != nil {
			return fmt.Errorf("config: models: %w", err)
		}
		if p == "" {
			return fmt.Errorf("config: models: %s has an empty path", name)
		}
	}
	return nil
}

// validDevice accepts the --device values: auto, cpu, cuda and cuda:N.
func validDevice(d string) bool {
	switch d {
	case "auto", "cpu", "cuda":
		return true
	}
	n, ok := strings.CutPrefix(d, "cuda:")
	if !ok || n == "" || len(n) > 4 {
		return false
	}
	for _, r := range n {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// ValidModelName checks that a model name is 1-64 characters of letters,
// digits, '-', '_' and '.', not starting with '.'.
func ValidModelName(name string) error {
	if name == "" || len(name) > 64 || name[0] == '.' {
		return fmt.Errorf("invalid model name %q", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("invalid model name %q (letters, digits, '-', '_' and '.' only)", name)
		}
	}
	return nil
}

// modelFlag is the repeatable --model name=path flag.
type modelFlag struct{ m *map[string]string }

func (f modelFlag) String() string {
	if f.m == nil || *f.m == nil {
		return ""
	}
	keys := make([]string, 0, len(*f.m))
	for k := range *f.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + (*f.m)[k]
	}
	return strings.Join(parts, ",")
}

func (f modelFlag) Set(s string) error {
	name, path, ok := strings.Cut(s, "=")
	if !ok || name == "" || path == "" {
		return fmt.Errorf("want name=path, got %q", s)
	}
	if err := ValidModelName(name); err != nil {
		return err
	}
	if *f.m == nil {
		*f.m = map[string]string{}
	}
	(*f.m)[name] = path
	return nil
}

// listFlag is a comma-separated list flag.
type listFlag struct{ l *[]string }

func (f listFlag) String() string {
	if f.l == nil {
		return ""
	}
	return strings.Join(*f.l, ",")
}

func (f listFlag) Set(s string) error {
	*f.l = nil
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*f.l = append(*f.l, p)
		}
	}
	return nil
}

// FlagKeys maps each flag that Bind defines to its YAML key.
func FlagKeys(fs *flag.FlagSet) map[string]string {
	out := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		key := strings.ReplaceAll(f.Name, "-", "_")
		if f.Name == "model" {
			key = "models"
		}
		out[f.Name] = key
	})
	return out
}

// Bind defines one flag per configuration key on fs, writing into c. Call
// it after the defaults and any config file are merged, so that the flags'
// defaults show the effective values. The --config flag itself is defined by
// the caller.
func (c *Config) Bind(fs *flag.FlagSet) {
	fs.StringVar(&c.Role, "role", c.Role, "what this process runs: all, gateway or worker")
	fs.StringVar(&c.Listen, "listen", c.Listen, "HTTP listen address (host:port; port 0 picks a free one)")
	fs.StringVar(&c.AuthMode, "auth-mode", c.AuthMode, "auto (keyless only on loopback while no tenant was ever created), keyless (loopback only) or keys; recorded in the store at start")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "data directory of the embedded NATS JetStream store")
	fs.StringVar(&c.NATS, "nats", c.NATS, "URL of an external NATS server with JetStream (empty: embedded)")
	fs.StringVar(&c.NATSListen, "nats-listen", c.NATSListen, "host:port where the embedded NATS server accepts other processes (empty: none)")
	fs.StringVar(&c.Device, "device", c.Device, "worker device: auto (one worker per GPU, else the CPU), cpu, cuda (cuda:0) or cuda:N")
	fs.IntVar(&c.Workers, "workers", c.Workers, "worker loops on the CPU (GPU hosts run one worker per GPU)")
	fs.BoolVar(&c.Placement, "placement", c.Placement, "place jobs on the GPU that holds their model, replicating busy models (several GPUs; off: any worker takes any job)")
	fs.Var(&c.MemoryBudget, "memory-budget", "model cache budget: auto, a percentage (80%) or a size (12GiB)")
	fs.Var(&c.HostMemoryBudget, "host-memory-budget", "pinned host memory for models offloaded from GPUs, shared by all GPUs: auto (25% of RAM), a percentage of RAM or a size (16GiB)")
	fs.StringVar(&c.HardwareProfile, "hardware-profile", c.HardwareProfile, "hardware profile name or auto")
	fs.Var(modelFlag{&c.Models}, "model", "a model as name=path (repeatable)")
	fs.BoolVar(&c.BuiltinModel, "builtin-model", c.BuiltinModel, "serve the built-in model kiln-shapes (the default model when default-model is empty)")
	fs.BoolVar(&c.SyntheticModels, "synthetic-models", c.SyntheticModels, "accept models named synthetic:NAME (random weights, for benchmarks), e.g. --model sd15=synthetic:sd15")
	fs.StringVar(&c.ModelsDir, "models-dir", c.ModelsDir, "folder scanned for models (empty: <data-dir>/models)")
	fs.StringVar(&c.DefaultModel, "default-model", c.DefaultModel, "model used when a request names none")
	fs.StringVar(&c.DefaultProfile, "default-profile", c.DefaultProfile, "performance profile used when a request names none")
	fs.StringVar(&c.AdminListen, "admin-listen", c.AdminListen, "admin listener with pprof (empty: off)")
	fs.StringVar(&c.AdminKeyFile, "admin-key-file", c.AdminKeyFile, "file holding the admin key of /v1/admin (else $KILN_ADMIN_KEY, else one is made at first start and printed once)")
	fs.Var(&c.AuditRetention, "audit-retention", "how long the audit log of admin actions is kept")
	fs.Var(listFlag{&c.CORSOrigins}, "cors-origins", "comma-separated origins allowed by CORS (empty: off)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
	fs.Var(&c.MaxBodyBytes, "max-body-bytes", "largest request body")
	fs.Var(&c.MaxLoRABytes, "max-lora-bytes", "largest LoRA a tenant may upload")
	fs.IntVar(&c.MaxImagePixels, "max-image-pixels", c.MaxImagePixels, "largest init image in pixels")
	fs.Var(&c.MaxImageDecodeBytes, "max-image-decode-bytes", "largest decoded init image in memory (pixels × channels × bytes per sample, from its header)")
	fs.Var(&c.ImageDecodeBudget, "image-decode-budget", "memory all image decodes in flight may hold together")
	fs.Var(&c.ReadHeaderTimeout, "read-header-timeout", "HTTP header read timeout")
	fs.Var(&c.ReadTimeout, "read-timeout", "HTTP request read timeout")
	fs.Var(&c.IdleTimeout, "idle-timeout", "HTTP keep-alive idle timeout")
	fs.Var(&c.SyncTimeout, "sync-timeout", "how long the OpenAI images endpoint waits for its images")
	fs.Var(&c.MaxCPUJobTime, "max-cpu-job-time", "refuse (422) jobs estimated to run longer on CPU workers (0: no limit)")
	fs.Float64Var(&c.CPUSpeedPrior, "cpu-speed-prior", c.CPUSpeedPrior, "assumed CPU speed of a 1 GiB model before any is measured, in megapixel-steps/s")
	fs.Var(&c.ShutdownTimeout, "shutdown-timeout", "grace period for running jobs on SIGTERM")
	fs.IntVar(&c.MaxWebSocketsPerTenant, "max-websockets-per-tenant", c.MaxWebSocketsPerTenant, "open WebSockets per tenant")
	fs.IntVar(&c.WSSendQueue, "ws-send-queue", c.WSSendQueue, "queued messages per WebSocket before it is dropped as slow")
	fs.Var(&c.MetricsInterval, "metrics-interval", "interval of metrics events and worker heartbeats")
	fs.IntVar(&c.JobAttempts, "job-attempts", c.JobAttempts, "deliveries of a job before it is marked failed")
	fs.Var(&c.AckWait, "ack-wait", "silence after which a job is redelivered to another worker")
	fs.Var(&c.JobRetention, "job-retention", "how long job records and images are kept")
	fs.Var(&c.PlanCacheBytes, "plan-cache-bytes", "size of the validated request plan cache")
	fs.Var(&c.TextCacheBytes, "text-cache-bytes", "size of the text-encoder output cache")
	fs.IntVar(&c.PreviewSize, "preview-size", c.PreviewSize, "longest side of preview JPEGs in pixels")
	fs.IntVar(&c.PreviewQuality, "preview-quality", c.PreviewQuality, "JPEG quality of previews (1-100)")
	fs.IntVar(&c.PreviewEvery, "preview-every", c.PreviewEvery, "send a preview every N steps (0: never)")
}

// Load builds the configuration from the embedded defaults, the file named
// by --config (if any) and the other flags in args, in that order.
func Load(name string, args []string, stderr io.Writer) (*Config, error) {
	cfg, err := Default()
	if err != nil {
		return nil, err
	}
	// First pass: find --config so flags can show the effective defaults.
	pre := flag.NewFlagSet(name, flag.ContinueOnError)
	pre.SetOutput(io.Discard)
	var cfgFile string
	pre.StringVar(&cfgFile, "config", "", "")
	scratch := *cfg
	scratch.Models = map[string]string{}
	scratch.Bind(pre)
	_ = pre.Parse(args) // errors are reported by the second pass
	if cfgFile != "" {
		if err := cfg.MergeFile(cfgFile); err != nil {
			return nil, err
		}
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String("config", cfgFile, "YAML file read on top of the built-in defaults (configs/kiln.yaml)")
	cfg.Bind(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// readEmbedded reads a file from the embedded configs.
func readEmbedded(name string) ([]byte, error) {
	return fs.ReadFile(configs.FS, name)
}
