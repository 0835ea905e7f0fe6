package wasmhost

import "github.com/kiln-project/kiln/wasmhost/abi"

// Natives are the native defaults a hook answers with when its module is
// absent or fails: Kiln's built-in policies and nodes run as plain Go.
// The composition root hands them in through Config.Natives
// (app/wasmadapter.Natives), so that the sandbox runtime depends only on
// its ABI, wazero and the image ops. A nil policy field answers with the
// zero decision (no batch, no victims, the request unchanged); without
// NodeHook no node name is built in, and a node answers with the request
// or image unchanged.
type Natives struct {
	// Batching, Eviction and Quality are the native policy decisions.
	Batching func(*abi.BatchingInput) abi.BatchingOutput
	Eviction func(*abi.EvictionInput) abi.EvictionOutput
	Quality  func(*abi.QualityInput) abi.QualityOutput
	// NodeHook reports the hook of the built-in node name, false when no
	// built-in node has that name.
	NodeHook func(name string) (abi.Hook, bool)
	// NodeParams checks the parameters of the built-in node name.
	NodeParams func(name string, params []abi.Param) error
	// NodePre and NodePost run a built-in pre- or post-processing node.
	NodePre  func(*abi.PreInput) abi.PreOutput
	NodePost func(*abi.PostInput) abi.PostOutput
}

func (n Natives) batching(in *abi.BatchingInput) abi.BatchingOutput {
	if n.Batching == nil {
		return abi.BatchingOutput{}
	}
	return n.Batching(in)
}

func (n Natives) eviction(in *abi.EvictionInput) abi.EvictionOutput {
	if n.Eviction == nil {
		return abi.EvictionOutput{}
	}
	return n.Eviction(in)
}

func (n Natives) quality(in *abi.QualityInput) abi.QualityOutput {
	if n.Quality == nil {
		return abi.QualityOutput{Params: in.Request, Level: in.Level}
	}
	return n.Quality(in)
}

// Hook reports the hook of the built-in node name (false: not built in).
func (n Natives) Hook(name string) (abi.Hook, bool) {
	if n.NodeHook == nil {
		return "", false
	}
	return n.NodeHook(name)
}

// CheckParams checks the parameters of the built-in node name; names
// that are not built in have nothing to check.
func (n Natives) CheckParams(name string, params []abi.Param) error {
	if _, ok := n.Hook(name); !ok || n.NodeParams == nil {
		return nil
	}
	return n.NodeParams(name, params)
}

// Pre is the native default of a pre-processing node: the built-in node
// of that name when there is one, otherwise the request unchanged.
func (n Natives) Pre(in *abi.PreInput) abi.PreOutput {
	if h, ok := n.Hook(in.Node); ok && h == abi.HookNodePre && n.NodePre != nil {
		return n.NodePre(in)
	}
	return abi.PreOutput{
		Prompt: in.Prompt, NegativePrompt: in.NegativePrompt, Width: in.Width, Height: in.Height,
		Steps: in.Steps, Guidance: in.Guidance, Sampler: in.Sampler, Seed: in.Seed,
	}
}

// Post is the native default of a post-processing node: the built-in
// node of that name when there is one, otherwise the image unchanged.
func (n Natives) Post(in *abi.PostInput) abi.PostOutput {
	if h, ok := n.Hook(in.Node); ok && h == abi.HookNodePost && n.NodePost != nil {
		return n.NodePost(in)
	}
	return abi.PostOutput{Image: in.Image}
}
