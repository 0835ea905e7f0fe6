package api

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kiln-project/kiln/gateway/openapi"
)

// OpenAPI is the hand-written OpenAPI 3.0 description of the native API;
// the served document (Document) is built from it.
//
//go:embed openapi.json
var OpenAPI []byte

//go:embed docs.html
var docsPage []byte

// buildOpenAPI builds the served OpenAPI 3.1 document: the native API's
// description upgraded to 3.1, plus the adapters' routes with schemas
// generated from the Go types their handlers decode and encode.
func (s *Server) buildOpenAPI() ([]byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(OpenAPI, &doc); err != nil {
		return nil, fmt.Errorf("api: openapi.json: %w", err)
	}
	openapi.Upgrade(doc)
	ops := []openapi.Operation{{Method: http.MethodGet, Path: "/docs", Summary: "The API reference rendered from this document",
		Tag: "operations", Public: true}}
	for _, r := range s.a1111.Routes() {
		ops = append(ops, openapi.Operation{Method: r.Method, Path: r.Path, Summary: r.Summary, Tag: "a1111",
			Request: r.Request, Response: r.Response})
	}
	openapi.Add(doc, openapi.NewSchemas("A1111"), ops)
	ops = ops[:0]
	for _, r := range s.comfy.Routes() {
		ops = append(ops, openapi.Operation{Method: r.Method, Path: r.Path, Summary: r.Summary, Tag: "comfyui",
			Request: r.Request, Response: r.Response})
	}
	openapi.Add(doc, openapi.NewSchemas("ComfyUI"), ops)
	tags, _ := doc["tags"].([]any)
	doc["tags"] = append(tags, map[string]any{"name": "a1111",
		"description": "AUTOMATIC1111's web API (/sdapi/v1), translated to native jobs (docs/api.md)."},
		map[string]any{"name": "comfyui", "description": "ComfyUI's API: API-format workflows of core nodes compiled into native jobs (docs/api.md)."})
	return json.Marshal(doc)
}

// Document returns the served OpenAPI document.
func (s *Server) Document() []byte { return s.openapiDoc }

func (s *Server) openapi(c echo.Context) error {
	return c.Blob(http.StatusOK, "application/json", s.openapiDoc)
}

func (s *Server) docs(c echo.Context) error {
	c.Response().Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline' 'self'")
	return c.HTMLBlob(http.StatusOK, docsPage)
}
