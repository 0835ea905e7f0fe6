package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/kiln-project/kiln/core/lora"
	"github.com/kiln-project/kiln/core/safetensors"
	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/server/loralib"
)

// listLoRAs serves GET /v1/loras: the installed LoRAs and the caller's
// own uploads.
func (s *Server) listLoRAs(c echo.Context) error { return s.listLibrary(c, loralib.LoRAs) }

// listEmbeddings serves GET /v1/embeddings.
func (s *Server) listEmbeddings(c echo.Context) error { return s.listLibrary(c, loralib.Embeddings) }

func (s *Server) listLibrary(c echo.Context, kind string) error {
	out := struct {
		Data []loralib.Entry `json:"data"`
	}{Data: []loralib.Entry{}}
	if s.o.Library != nil {
		es, err := s.o.Library.ListFor(principal(c).Tenant, kind)
		if err != nil {
			s.log.Warn("list "+kind, "err", err)
			return apierr.New(http.StatusInternalServerError, apierr.CodeInternal, "", "cannot list %s", kind)
		}
		if es != nil {
			out.Data = es
		}
	}
	return c.JSON(http.StatusOK, out)
}

// putLoRA serves PUT /v1/loras/{name}: the body is a .safetensors LoRA,
// stored for the caller's tenant only once it parses against the layout of
// the model named by ?model= (default: the server's default model).
func (s *Server) putLoRA(c echo.Context) error {
	lib := s.o.Library
	if lib == nil {
		return apierr.New(http.StatusServiceUnavailable, apierr.CodeUnavailable, "", "this server has no models folder to store LoRAs in")
	}
	name := c.Param("name")
	if err := loralib.CheckName(name); err != nil {
		return apierr.Invalid("name", "%v", err)
	}
	limit := int64(s.cfg.MaxLoRABytes)
	if c.Request().ContentLength > limit {
		return apierr.New(http.StatusRequestEntityTooLarge, apierr.CodeTooLarge, "", "the LoRA is %d bytes; the limit (max_lora_bytes) is %d", c.Request().ContentLength, limit)
	}
	model := c.QueryParam("model")
	if model == "" {
		model = s.o.Models.Default()
	}
	if _, ok := s.o.Models.Get(model); !ok {
		return apierr.New(http.StatusBadRequest, apierr.CodeNoModel, "model", "unknown model %q to check the LoRA against (?model=)", model)
	}
	layout := func() (lora.Modules, error) {
		if s.o.LoRAModules == nil {
			return nil, errors.New("this server cannot read model layouts")
		}
		return s.o.LoRAModules(model)
	}
	e, err := lib.Put(principal(c).Tenant, name, c.Request().Body, limit, func(path string) error {
		return checkLoRAFile(path, layout)
	})
	var bad *badUpload
	var nolayout *noLayout
	switch {
	case errors.As(err, &nolayout):
		return apierr.New(http.StatusServiceUnavailable, apierr.CodeUnavailable, "model", "cannot check the LoRA against model %q: %v", model, nolayout.err)
	case errors.Is(err, loralib.ErrTooLarge):
		return apierr.New(http.StatusRequestEntityTooLarge, apierr.CodeTooLarge, "", "the LoRA is over the limit (max_lora_bytes) of %d bytes", limit)
	case errors.As(err, &bad):
		return apierr.Invalid("body", "%v", bad.err)
	case err != nil:
		s.log.Warn("store LoRA", "err", err)
		return apierr.New(http.StatusInternalServerError, apierr.CodeInternal, "", "cannot store the LoRA")
	}
	return c.JSON(http.StatusCreated, e)
}

// deleteLoRA serves DELETE /v1/loras/{name}: removes the caller's upload.
func (s *Server) deleteLoRA(c echo.Context) error {
	if s.o.Library == nil {
		return apierr.NotFound("LoRA")
	}
	err := s.o.Library.Delete(principal(c).Tenant, c.Param("name"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return apierr.NotFound("LoRA")
	case err != nil:
		s.log.Warn("delete LoRA", "err", err)
		return apierr.New(http.StatusInternalServerError, apierr.CodeInternal, "", "cannot delete the LoRA")
	}
	return c.NoContent(http.StatusNoContent)
}

// badUpload is an upload refused for its content (a 400).
type badUpload struct{ err error }

func (b *badUpload) Error() string { return b.err.Error() }

// noLayout is an upload that cannot be checked: the model's layout is not
// known here (a 503).
type noLayout struct{ err error }

func (n *noLayout) Error() string { return n.err.Error() }

// checkLoRAFile refuses pickles and files that are not safetensors LoRAs
// fitting the model's layout (the error names the first key that does not
// fit).
func checkLoRAFile(path string, layout func() (lora.Modules, error)) error {
	head := make([]byte, 4)
	if f, err := os.Open(path); err == nil {
		n, _ := io.ReadFull(f, head)
		head = head[:n]
		f.Close()
	}
	if (len(head) >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5) || bytes.HasPrefix(head, []byte("PK\x03\x04")) {
		return &badUpload{errors.New("the body is a Python pickle (a .pt/.ckpt file), which Kiln never loads (it can run code); convert it to .safetensors")}
	}
	f, err := safetensors.Open(path)
	if err != nil {
		// the message names the temporary file: keep the server's paths out
		msg := strings.ReplaceAll(err.Error(), " (file "+path+")", "")
		return &badUpload{fmt.Errorf("not a safetensors file: %s", strings.ReplaceAll(msg, path, "the upload"))}
	}
	defer f.Close()
	mods, err := layout()
	if err != nil {
		return &noLayout{err}
	}
	if _, err := lora.Parse(f, mods); err != nil {
		return &badUpload{err}
	}
	return nil
}
