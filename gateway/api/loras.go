package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/server/loralib"
)

// listLoRAs serves GET /v1/loras.
func (s *Server) listLoRAs(c echo.Context) error { return s.listLibrary(c, loralib.LoRAs) }

// listEmbeddings serves GET /v1/embeddings.
func (s *Server) listEmbeddings(c echo.Context) error { return s.listLibrary(c, loralib.Embeddings) }

func (s *Server) listLibrary(c echo.Context, kind string) error {
	out := struct {
		Data []loralib.Entry `json:"data"`
	}{Data: []loralib.Entry{}}
	if s.o.Library != nil {
		es, err := s.o.Library.List(kind)
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
