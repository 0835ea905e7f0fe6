package openapi

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

type inner struct {
	N int `json:"n"`
}

type sample struct {
	Name     string          `json:"name"`
	Opt      *float64        `json:"opt,omitempty"`
	When     time.Time       `json:"when"`
	Raw      json.RawMessage `json:"raw,omitempty"`
	List     []inner         `json:"list"`
	Tags     map[string]int  `json:"tags,omitempty"`
	Skip     string          `json:"-"`
	hidden   int
	Embedded `json:""`
}

// Embedded is inlined into its parent's schema.
type Embedded struct {
	Extra bool `json:"extra"`
}

func TestSchemasFromTypes(t *testing.T) {
	s := NewSchemas("T")
	ref := s.Of(sample{})
	if ref["$ref"] != "#/components/schemas/Tsample" {
		t.Fatalf("ref %v", ref)
	}
	got, _ := json.Marshal(s.Defs())
	want := `{"Tinner":{"properties":{"n":{"type":"integer"}},"required":["n"],"type":"object"},` +
		`"Tsample":{"properties":{"extra":{"type":"boolean"},"list":{"items":{"$ref":"#/components/schemas/Tinner"},"type":"array"},` +
		`"name":{"type":"string"},"opt":{"type":["number","null"]},"raw":{},"tags":{"additionalProperties":{"type":"integer"},"type":"object"},` +
		`"when":{"format":"date-time","type":"string"}},"required":["extra","list","name","when"],"type":"object"}}`
	if string(got) != want {
		t.Fatalf("schemas\n%s\nwant\n%s", got, want)
	}
	_ = sample{}.hidden
}

func TestUpgradeAndAdd(t *testing.T) {
	var doc map[string]any
	_ = json.Unmarshal([]byte(`{"openapi":"3.0.3","paths":{},"components":{"schemas":{
		"A":{"type":"string","nullable":true},
		"B":{"allOf":[{"$ref":"#/components/schemas/A"}],"nullable":true},
		"C":{"type":"number","minimum":0,"exclusiveMinimum":true,"maximum":1,"exclusiveMaximum":false}}}}`), &doc)
	Upgrade(doc)
	Add(doc, NewSchemas("X"), []Operation{{Method: http.MethodPost, Path: "/x/{id}", Summary: "x", Request: inner{}, Response: []inner{}}})
	got, _ := json.Marshal(doc)
	want := `{"components":{"schemas":{"A":{"type":["string","null"]},"B":{"anyOf":[{"allOf":[{"$ref":"#/components/schemas/A"}]},{"type":"null"}]},` +
		`"C":{"exclusiveMinimum":0,"maximum":1,"type":"number"},"Xinner":{"properties":{"n":{"type":"integer"}},"required":["n"],"type":"object"}}},` +
		`"openapi":"3.1.0","paths":{"/x/{id}":{"post":{"operationId":"postXId","parameters":[{"in":"path","name":"id","required":true,"schema":{"type":"string"}}],` +
		`"requestBody":{"content":{"application/json":{"schema":{"$ref":"#/components/schemas/Xinner"}}},"required":true},` +
		`"responses":{"200":{"content":{"application/json":{"schema":{"items":{"$ref":"#/components/schemas/Xinner"},"type":"array"}}},"description":"Success."},` +
		`"default":{"description":"An error."}},"summary":"x"}}}}`
	if string(got) != want {
		t.Fatalf("doc\n%s\nwant\n%s", got, want)
	}
}
