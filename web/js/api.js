// The HTTP side of the client: Kiln's native API under /v1 with the
// tenant's key (when there is one) as a bearer token, errors turned into
// ApiError from the {"error":{"code","message","field"}} envelope.

/** An error answered by the API (or a network failure, code "network"). */
export class ApiError extends Error {
  constructor(status, code, message, field = '', retryAfter = 0) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field;
    this.retryAfter = retryAfter;
  }
}

/** Client of the native API. getKey returns the API key or "". */
export class Api {
  constructor(getKey, base = '') {
    this.getKey = getKey;
    this.base = base;
  }

  headers(extra = {}) {
    const h = { Accept: 'application/json', ...extra };
    const key = this.getKey();
    if (key) h.Authorization = `Bearer ${key}`;
    return h;
  }

  async request(method, path, body) {
    let res;
    try {
      res = await fetch(this.base + path, {
        method,
        headers: this.headers(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch (e) {
      throw new ApiError(0, 'network', `cannot reach the server (${e.message})`);
    }
    let data = null;
    const text = await res.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      const err = data?.error ?? {};
      const retry = Number(res.headers.get('Retry-After')) || 0;
      throw new ApiError(res.status, err.code ?? `http_${res.status}`, err.message ?? `${res.status} ${res.statusText}`,
        err.field ?? '', retry);
    }
    return data;
  }

  /** The tenant, its quota and the server's fixed limits. */
  account() { return this.request('GET', '/v1/account'); }
  /** The installed models. */
  models() { return this.request('GET', '/v1/models'); }
  /** The performance profiles and the default one. */
  profiles() { return this.request('GET', '/v1/profiles'); }
  /** The samplers. */
  samplers() { return this.request('GET', '/v1/samplers'); }

  /** The installed LoRAs. */
  loras() { return this.request('GET', '/v1/loras'); }

  /** The installed textual-inversion embeddings. */
  embeddings() { return this.request('GET', '/v1/embeddings'); }
  /** Queue depth, workers and GPUs now. */
  status() { return this.request('GET', '/v1/status'); }
  /** Submits a job; resolves to the job with its queue position. */
  submit(req) { return this.request('POST', '/v1/jobs', req); }
  /** One job. */
  job(id) { return this.request('GET', `/v1/jobs/${encodeURIComponent(id)}`); }
  /** A page of the tenant's jobs, newest first. */
  jobs({ status = '', limit = 12, cursor = '' } = {}) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (status) q.set('status', status);
    if (cursor) q.set('cursor', cursor);
    return this.request('GET', `/v1/jobs?${q}`);
  }
  /** Cancels a queued or running job. */
  cancel(id) { return this.request('DELETE', `/v1/jobs/${encodeURIComponent(id)}`); }

  /** Fetches an image (with the key) as a Blob. */
  async imageBlob(url) {
    let res;
    try {
      res = await fetch(this.base + url, { headers: this.headers({ Accept: 'image/png' }) });
    } catch (e) {
      throw new ApiError(0, 'network', `cannot reach the server (${e.message})`);
    }
    if (!res.ok) {
      let msg = `${res.status} ${res.statusText}`;
      try {
        msg = (await res.json()).error.message;
      } catch { /* not JSON */ }
      throw new ApiError(res.status, 'image', msg);
    }
    return res.blob();
  }
}
