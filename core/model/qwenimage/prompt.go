package qwenimage

import (
	"context"
	"fmt"
	"strings"

	"github.com/kiln-project/kiln/core/model/qwen2"
	"github.com/kiln-project/kiln/core/tokenizer"
)

// PromptTemplate is the chat template QwenImagePipeline wraps a prompt in
// before encoding it.
const PromptTemplate = "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"

// DropTokens is the number of leading hidden states (the template's system
// part, as Qwen's tokenizer splits it) the pipeline drops.
const DropTokens = 34

// MaxPromptTokens bounds the tokens kept after the dropped ones
// (tokenizer_max_length in diffusers).
const MaxPromptTokens = 1024

// TextEncoder turns prompts into Qwen-Image's conditioning: the Qwen2.5-VL
// text model's last hidden states of the templated prompt, less the first
// DropTokens.
type TextEncoder struct {
	Tok   *tokenizer.Qwen2
	Model *qwen2.Model
}

// Tokens returns the ids the pipeline feeds the text model for prompt:
// the templated text, truncated to DropTokens+MaxPromptTokens tokens.
func (e *TextEncoder) Tokens(prompt string) []int32 {
	ids := e.Tok.Encode(strings.Replace(PromptTemplate, "{}", prompt, 1))
	if len(ids) > DropTokens+MaxPromptTokens {
		ids = ids[:DropTokens+MaxPromptTokens]
	}
	return ids
}

// Encode returns each prompt's hidden states (its own length × hidden
// size, no padding) as QwenImagePipeline._get_qwen_prompt_embeds does
// before it pads the batch.
func (e *TextEncoder) Encode(ctx context.Context, prompts []string) ([][]float32, error) {
	ids := make([][]int32, len(prompts))
	for i, p := range prompts {
		ids[i] = e.Tokens(p)
		if len(ids[i]) <= DropTokens {
			return nil, fmt.Errorf("qwenimage: prompt %d: %d tokens with the template, the pipeline drops the first %d", i, len(ids[i]), DropTokens)
		}
	}
	hs, err := e.Model.Forward(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("qwenimage: text encoder: %w", err)
	}
	d := e.Model.Config().HiddenSize
	for i := range hs {
		hs[i] = hs[i][DropTokens*d:]
	}
	return hs, nil
}
