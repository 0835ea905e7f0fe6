package abi

import "testing"

// The decoders read bytes a guest wrote (outputs) or that the SDK hands a
// guest (inputs): no byte string may make them panic or allocate beyond
// the message, and whatever they accept must re-encode to the same bytes.

func FuzzDecodeOutputs(f *testing.F) {
	f.Add(EncodeBatchingOutput(nil, &BatchingOutput{Jobs: []uint32{1, 2}}))
	f.Add(EncodeEvictionOutput(nil, &EvictionOutput{Victims: []Victim{{Index: 1, Offload: true}}}))
	f.Add(EncodeQualityOutput(nil, &QualityOutput{Params: QualityParams{Steps: 3, Sampler: "e"}, Level: 0.5}))
	f.Add(EncodePreOutput(nil, &PreOutput{Prompt: "p", Width: 8, Height: 8, Steps: 1}))
	f.Add(EncodePostOutput(nil, &PostOutput{Image: Image{Width: 1, Height: 1, Pix: []byte{1, 2, 3, 4}}}))
	f.Add(EncodeError(nil, "boom"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if out, err := DecodeBatchingOutput(b); err == nil {
			if string(EncodeBatchingOutput(nil, &out)) != string(b) {
				t.Fatal("batching output does not re-encode")
			}
		}
		if out, err := DecodeEvictionOutput(b); err == nil {
			if string(EncodeEvictionOutput(nil, &out)) != string(b) {
				t.Fatal("eviction output does not re-encode")
			}
		}
		if out, err := DecodeQualityOutput(b); err == nil {
			// Minor 0 and minor 2 encodings differ by the reason.
			if string(EncodeQualityOutputAt(nil, &out, 0)) != string(b) && string(EncodeQualityOutputAt(nil, &out, Minor)) != string(b) {
				t.Fatal("quality output does not re-encode")
			}
		}
		if out, err := DecodePreOutput(b); err == nil {
			if string(EncodePreOutput(nil, &out)) != string(b) {
				t.Fatal("pre output does not re-encode")
			}
		}
		if out, err := DecodePostOutput(b); err == nil {
			if string(EncodePostOutput(nil, &out)) != string(b) {
				t.Fatal("post output does not re-encode")
			}
		}
	})
}

func FuzzDecodeInputs(f *testing.F) {
	f.Add(EncodeBatchingInput(nil, sampleBatching(3)))
	f.Add(EncodeBatchingInput(nil, withRunning(sampleBatching(2))))
	f.Add(EncodeEvictionInput(nil, &EvictionInput{Models: []Model{{ID: "a", Bytes: 1}}}))
	f.Add(EncodeQualityInput(nil, &QualityInput{Limits: QualityLimits{Samplers: []string{"e"}}}))
	f.Add(EncodeQualityInputAt(nil, &QualityInput{Limits: QualityLimits{Samplers: []string{"e"}}}, 0))
	f.Add(EncodePreInput(nil, &PreInput{Node: "n", Params: []Param{{"k", "v"}}, Prompt: "p"}))
	f.Add(EncodePostInput(nil, &PostInput{Node: "n", Image: Image{Width: 1, Height: 1, Pix: []byte{1, 2, 3, 4}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if in, err := DecodeBatchingInput(b); err == nil {
			// Minor 0 and minor 1 encodings differ by the running batch.
			if string(EncodeBatchingInputAt(nil, &in, 0)) != string(b) && string(EncodeBatchingInput(nil, &in)) != string(b) {
				t.Fatal("batching input does not re-encode")
			}
		}
		if in, err := DecodeEvictionInput(b); err == nil {
			// Minor 0 and minor 3 encodings differ by the tiers fields.
			if string(EncodeEvictionInputAt(nil, &in, 0)) != string(b) && string(EncodeEvictionInputAt(nil, &in, Minor)) != string(b) {
				t.Fatal("eviction input does not re-encode")
			}
		}
		if in, minor, err := DecodeQualityInputMinor(b); err == nil {
			if string(EncodeQualityInputAt(nil, &in, minor)) != string(b) {
				t.Fatal("quality input does not re-encode")
			}
		}
		if in, err := DecodePreInput(b); err == nil {
			if string(EncodePreInput(nil, &in)) != string(b) {
				t.Fatal("pre input does not re-encode")
			}
		}
		if in, err := DecodePostInput(b); err == nil {
			if string(EncodePostInput(nil, &in)) != string(b) {
				t.Fatal("post input does not re-encode")
			}
		}
	})
}
