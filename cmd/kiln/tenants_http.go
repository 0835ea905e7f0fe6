package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kiln-project/kiln/gateway/api"
	"github.com/kiln-project/kiln/gateway/apierr"
	"github.com/kiln-project/kiln/server/config"
	"github.com/kiln-project/kiln/server/tenants"
)

// httpAdmin manages tenants through a running server's admin API.
type httpAdmin struct {
	base, key string
	client    *http.Client
}

// serverAdmin returns the admin API of the server at base when one
// answers there (nil, with a note on stderr, when none does), or an error
// when it answers but no admin key is at hand.
func serverAdmin(ctx context.Context, base string, key func() (string, error), stderr io.Writer) (tenantAdmin, error) {
	base = strings.TrimRight(base, "/")
	if _, err := url.Parse(base); err != nil || !strings.HasPrefix(base, "http") {
		return nil, usageError{fmt.Errorf("--server must be an http(s) URL, got %q", base)}
	}
	client := &http.Client{Timeout: 30 * time.Second}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(pctx, http.MethodGet, base+"/healthz", nil)
	resp, err := client.Do(req)
	if err != nil {
		fprintf(stderr, "no kiln server answers at %s; using the data directory\n", base)
		return nil, nil
	}
	resp.Body.Close()
	k, err := key()
	if err != nil {
		return nil, err
	}
	if k == "" {
		return nil, fmt.Errorf("a kiln server runs at %s: pass its admin key (--admin-key, --admin-key-file or KILN_ADMIN_KEY; the server logged it at its first start)", base)
	}
	return &httpAdmin{base: base, key: k, client: client}, nil
}

// call sends one admin request and decodes the answer into out.
func (h *httpAdmin) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+h.key)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e apierr.Body
		if json.Unmarshal(data, &e) == nil && e.Error != nil {
			return fmt.Errorf("server: %s (%d %s)", e.Error.Message, resp.StatusCode, e.Error.Code)
		}
		return fmt.Errorf("server: %s %s: %d", method, path, resp.StatusCode)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("server: %s %s: %w", method, path, err)
		}
	}
	return nil
}

func (h *httpAdmin) create(ctx context.Context, id string, _ config.Quota, patch api.QuotaPatch, st tenants.Settings) (*tenants.Tenant, string, error) {
	var out struct {
		Tenant api.TenantView `json:"tenant"`
		Key    string         `json:"key"`
	}
	body := api.TenantCreate{ID: id, TenantPatch: api.TenantPatch{Quota: &patch, Weight: st.Weight, Quality: st.Quality}}
	if err := h.call(ctx, http.MethodPost, "/v1/admin/tenants", body, &out); err != nil {
		return nil, "", err
	}
	return &out.Tenant.Tenant, out.Key, nil
}

func (h *httpAdmin) newKey(ctx context.Context, id string) (string, error) {
	var out struct {
		Key string `json:"key"`
	}
	err := h.call(ctx, http.MethodPost, "/v1/admin/tenants/"+url.PathEscape(id)+"/keys", nil, &out)
	return out.Key, err
}

func (h *httpAdmin) list(ctx context.Context) ([]tenants.Tenant, map[string]int, error) {
	var out struct {
		Data []api.TenantView `json:"data"`
	}
	if err := h.call(ctx, http.MethodGet, "/v1/admin/tenants", nil, &out); err != nil {
		return nil, nil, err
	}
	var list []tenants.Tenant
	keys := map[string]int{}
	for _, v := range out.Data {
		list = append(list, v.Tenant)
		for _, k := range v.Keys {
			if !k.Revoked {
				keys[v.ID]++
			}
		}
	}
	return list, keys, nil
}

func (h *httpAdmin) revoke(ctx context.Context, id string) error {
	return h.call(ctx, http.MethodDelete, "/v1/admin/tenants/"+url.PathEscape(id), nil, nil)
}

func (h *httpAdmin) change(ctx context.Context, id string, patch api.QuotaPatch, st tenants.Settings) (*tenants.Tenant, error) {
	var out api.TenantView
	path := "/v1/admin/tenants/" + url.PathEscape(id)
	var err error
	if patch == (api.QuotaPatch{}) && st.Weight == nil && st.Quality == nil {
		err = h.call(ctx, http.MethodGet, path, nil, &out)
	} else {
		err = h.call(ctx, http.MethodPatch, path, api.TenantPatch{Quota: &patch, Weight: st.Weight, Quality: st.Quality}, &out)
	}
	if err != nil {
		return nil, err
	}
	return &out.Tenant, nil
}
