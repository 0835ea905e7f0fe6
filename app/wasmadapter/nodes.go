package wasmadapter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/draw"
	"net/http"
	"sync"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/server/jobs"
	"github.com/kiln-project/kiln/wasmhost/abi"
	"github.com/kiln-project/kiln/wasmhost/registry"
)

// CodeNodeRejected is the API error code of a job a node rejected.
const CodeNodeRejected = "rejected_by_node"

// ParseChain decodes a job's "nodes" object strictly (unknown fields are
// errors). Empty input is an empty chain.
func ParseChain(raw json.RawMessage) (registry.Chain, error) {
	var c registry.Chain
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return c, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("nodes: %v (want {\"pre\": [{\"name\": ..., \"params\": {...}}], \"post\": [...]})", err)
	}
	return c, nil
}

// PreNodes validates a job's node chain and runs its pre-processing
// nodes over the parameters; the caller re-checks the tenant's limits on
// the result. A node's rejection is a 422 naming the node.
func (w *Wasm) PreNodes(ctx context.Context, tenant string, params jobs.Params) (jobs.Params, *apierr.Error) {
	c, err := ParseChain(params.Nodes)
	if err != nil {
		return params, apierr.Invalid("nodes", "%v", err)
	}
	if c.Empty() {
		return params, nil
	}
	if err := w.Registry.CheckChain(ctx, tenant, c); err != nil {
		return params, apierr.Invalid("nodes", "%v", err)
	}
	if len(c.Pre) == 0 {
		return params, nil
	}
	in := abi.PreInput{Model: params.Model, Prompt: params.Prompt, NegativePrompt: params.NegativePrompt,
		Width: uint32(params.Width), Height: uint32(params.Height), Steps: uint32(params.Steps),
		Guidance: params.Guidance, Sampler: params.Sampler, Seed: params.Seed}
	out, err := w.Registry.RunPre(ctx, tenant, c.Pre, in)
	var rej *registry.Rejection
	switch {
	case errors.As(err, &rej):
		return params, apierr.New(http.StatusUnprocessableEntity, CodeNodeRejected, "nodes.pre", "%s", rej.Error())
	case err != nil:
		return params, apierr.New(http.StatusInternalServerError, apierr.CodeInternal, "nodes.pre", "pre-processing failed: %v", err)
	}
	params.Prompt, params.NegativePrompt = out.Prompt, out.NegativePrompt
	params.Width, params.Height, params.Steps = int(out.Width), int(out.Height), int(out.Steps)
	params.Guidance, params.Sampler, params.Seed = out.Guidance, out.Sampler, out.Seed
	return params, nil
}

// toABI converts an image to the ABI's non-premultiplied RGBA.
func toABI(img image.Image) abi.Image {
	b := img.Bounds()
	if n, ok := img.(*image.NRGBA); ok && n.Stride == 4*b.Dx() && b.Min == (image.Point{}) {
		return abi.Image{Width: uint32(b.Dx()), Height: uint32(b.Dy()), Pix: n.Pix[:4*b.Dx()*b.Dy()]}
	}
	n := image.NewNRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(n, n.Rect, img, b.Min, draw.Src)
	return abi.Image{Width: uint32(b.Dx()), Height: uint32(b.Dy()), Pix: n.Pix}
}

func fromABI(im abi.Image) *image.NRGBA {
	return &image.NRGBA{Pix: im.Pix, Stride: 4 * int(im.Width), Rect: image.Rect(0, 0, int(im.Width), int(im.Height))}
}

// Post is the worker's PostProcessor: it runs the job's post-processing
// chain over each image on the CPU pool (the images of a job in
// parallel). A node's rejection fails the job with its reason.
func (w *Wasm) Post(ctx context.Context, j *jobs.Job, imgs []image.Image) ([]image.Image, error) {
	c, err := ParseChain(j.Params.Nodes)
	if err != nil {
		return nil, err
	}
	if len(c.Post) == 0 {
		return imgs, nil
	}
	out := make([]image.Image, len(imgs))
	errs := make([]error, len(imgs))
	var wg sync.WaitGroup
	for i, img := range imgs {
		wg.Add(1)
		in := abi.PostInput{Prompt: j.Params.Prompt, Seed: j.Params.Seed + uint64(i), Image: toABI(img)}
		if err := w.pool.Go(ctx, func() {
			defer wg.Done()
			res, err := w.Registry.RunPost(ctx, j.Tenant, c.Post, in)
			if err != nil {
				errs[i] = err
				return
			}
			out[i] = fromABI(res)
		}); err != nil {
			wg.Done()
			errs[i] = err
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}
