package api

import (
	"encoding/json"
	"sort"
	"testing"

	"github.com/kiln-project/kiln/gateway/openai"
	"github.com/kiln-project/kiln/gateway/openapi"
	"github.com/kiln-project/kiln/gateway/validate"
	"github.com/kiln-project/kiln/server/events"
)

// TestDocumentMatchesHandlerTypes checks that the hand-written schemas of
// the native API name exactly the JSON fields of the Go types the handlers
// decode and encode (the schemas gateway/openapi generates from them).
func TestDocumentMatchesHandlerTypes(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]any `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	gen := openapi.NewSchemas("")
	for schema, v := range map[string]any{
		"JobRequest": validate.JobRequest{}, "Job": JobView{}, "Params": ParamsView{}, "Image": events.Image{},
		"OpenAIImageRequest": openai.GenerationRequest{}, "OpenAIImagesResponse": openai.Response{},
		"OpenAIImageEditRequest": openai.EditRequest{}, "OpenAIImageVariationRequest": openai.VariationRequest{},
	} {
		ref := gen.Of(v)["$ref"].(string)
		generated := gen.Defs()[ref[len("#/components/schemas/"):]].(map[string]any)["properties"].(map[string]any)
		documented := doc.Components.Schemas[schema].Properties
		var missing, extra []string
		for name := range generated {
			if _, ok := documented[name]; !ok {
				missing = append(missing, name)
			}
		}
		for name := range documented {
			if _, ok := generated[name]; !ok {
				extra = append(extra, name)
			}
		}
		sort.Strings(missing)
		sort.Strings(extra)
		if len(missing)+len(extra) > 0 {
			t.Errorf("%s: the handlers' type has undocumented fields %v; the document names fields the type lacks %v", schema, missing, extra)
		}
	}
}
