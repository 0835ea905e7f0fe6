// Package abi defines version 1 of the Kiln WebAssembly ABI: the names a
// module exports, the messages the host and a guest exchange for each hook,
// their compact binary encoding, the limits on every field and the checks
// the host applies to every answer before acting on it.
//
// The package is plain Go with no dependencies so that the host (wasmhost)
// and the guest SDKs (policies/sdk, nodes-wasm/sdk, compiled to wasip1)
// share one encoder and decoder. docs/wasm-abi.md is the language-neutral
// specification of the same layout.
package abi

// Version is the ABI version a module reports from ExportVersion.
const Version = 1

// Minor is the highest minor version of ABI version 1 this package speaks.
// A module reports its minor from the optional ExportMinor (absent: 0).
// Fields added in minor N are appended at the end of a message's encoding
// and exchanged only when the module's minor is at least N, so modules
// built for an older minor keep working unchanged.
const Minor = 3

// Minor versions and what they add.
const (
	// MinorBatching (1) adds to the batching input the running batch
	// (continuous batching: which jobs join it at a step boundary) and
	// the measured activation bytes per image.
	MinorBatching = 1
	// MinorQuality (2) adds to the quality hook the input's Locked fields
	// and Model and the output's Reason.
	MinorQuality = 2
	// MinorTiers (3) adds to the eviction input what the memory manager
	// knows: the host memory budget, and per model the bytes only it holds
	// (models share components by content), its last offload and restore
	// times and its queued jobs.
	MinorTiers = 3
)

// Names of the exports and imports that make up the ABI.
const (
	// ExportVersion is () -> i32 and must return Version.
	ExportVersion = "kiln_abi_version"
	// ExportMinor is the optional () -> i32 export returning the module's
	// minor version (at most Minor).
	ExportMinor = "kiln_abi_minor"
	// ExportAlloc is (size i32) -> i32: a pointer to size writable bytes in
	// the guest's memory that stay valid until the next call to the module.
	ExportAlloc = "kiln_alloc"
	// ExportMemory is the guest's linear memory.
	ExportMemory = "memory"
	// ExportInitialize is the optional reactor initialiser, called once
	// after instantiation.
	ExportInitialize = "_initialize"
	// HostModule is the import module name of the host functions.
	HostModule = "kiln"
	// WASIModule is the import module name of the WASI subset the host offers.
	WASIModule = "wasi_snapshot_preview1"
)

// Hook names one extension point of the ABI.
type Hook string

// The hooks of ABI v1.
const (
	HookBatching Hook = "batching"
	HookEviction Hook = "eviction"
	HookQuality  Hook = "quality"
	HookNodePre  Hook = "node_pre"
	HookNodePost Hook = "node_post"
)

// Hooks lists every hook in a fixed order.
func Hooks() []Hook {
	return []Hook{HookBatching, HookEviction, HookQuality, HookNodePre, HookNodePost}
}

// Export is the name of the function a module exports to implement h:
// (input_ptr i32, input_len i32) -> i64, the result packing the output's
// pointer in the high 32 bits and its length in the low 32 bits.
func (h Hook) Export() string { return "kiln_" + string(h) }

// Valid reports whether h is a hook of this ABI version.
func (h Hook) Valid() bool {
	for _, k := range Hooks() {
		if k == h {
			return true
		}
	}
	return false
}

// IsPolicy reports whether h is a scheduling policy hook (as opposed to a node).
func (h Hook) IsPolicy() bool {
	return h == HookBatching || h == HookEviction || h == HookQuality
}

// Status bytes that begin every output.
const (
	// StatusOK is followed by the hook's answer.
	StatusOK = 0
	// StatusError is followed by a string: the guest could not answer.
	StatusError = 1
)

// Limits of ABI v1. The host rejects inputs it would send beyond them and
// answers beyond them; guests may rely on them.
const (
	// MaxStringBytes bounds every string other than prompts.
	MaxStringBytes = 256
	// MaxPromptBytes bounds prompts and negative prompts.
	MaxPromptBytes = 16 << 10
	// MaxReasonBytes bounds error messages and rejection reasons.
	MaxReasonBytes = 1 << 10
	// MaxJobs bounds the queued jobs passed to a batching decision.
	MaxJobs = 4096
	// MaxModels bounds the resident models passed to an eviction decision.
	MaxModels = 1024
	// MaxListItems bounds every other list (rules, tenants, latencies,
	// params, samplers, profiles).
	MaxListItems = 256
	// MaxWaitUS bounds the wait a batching policy may ask for (60 s).
	MaxWaitUS = 60_000_000
	// MaxImageSide bounds the width and height of node images and of
	// generation sizes.
	MaxImageSide = 8192
	// MaxImagePixels bounds width × height of node images (64 Mpx).
	MaxImagePixels = 64 << 20
	// MaxSteps bounds sampling steps in node and quality answers.
	MaxSteps = 1000
)
