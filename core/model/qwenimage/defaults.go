package qwenimage

// Defaults Qwen-Image's model card and QwenImagePipeline recommend, for
// the family registration (core/model/families) and the API's per-family
// defaults.
const (
	// NativeSize is the training resolution's side (1328², 1.76 MP).
	NativeSize = 1328
	// DefaultSteps is QwenImagePipeline's num_inference_steps.
	DefaultSteps = 50
	// DefaultCFG is the recommended true_cfg_scale (with a negative
	// prompt; " " when the user gives none).
	DefaultCFG = 4.0
	// SizeMultiple is what image sides must divide by: the VAE factor 8
	// times the 2×2 patch.
	SizeMultiple = 16
	// Sampler is the family's sampler: flow-matching Euler with the
	// resolution-dependent shift.
	Sampler = "flowmatch_euler"
)

// AspectSizes are the model card's width × height per aspect ratio,
// snapped down to SizeMultiple as the pipeline does (4:3 is published as
// 1472×1140, which the pipeline runs as 1472×1136).
var AspectSizes = map[string][2]int{
	"1:1":  {1328, 1328},
	"16:9": {1664, 928},
	"9:16": {928, 1664},
	"4:3":  {1472, 1136},
	"3:4":  {1136, 1472},
	"3:2":  {1584, 1056},
	"2:3":  {1056, 1584},
}
