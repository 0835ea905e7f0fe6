// The live side of the client: one WebSocket to /v1/ws subscribed to all
// of the tenant's jobs, with automatic reconnection (backoff with jitter),
// a watchdog that notices a silent connection, and resubscription of the
// jobs still in flight so that their current state arrives as snapshot
// events after every reconnect.

const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000];

/**
 * LiveSocket keeps a connection to the event stream.
 *
 * Options:
 *   url()           the WebSocket URL
 *   protocols()     subprotocols to offer (the API key travels as one)
 *   activeJobs()    ids of jobs to resubscribe after (re)connecting
 *   onMessage(msg)  each JSON message
 *   onPreview(buf)  each binary frame (an ArrayBuffer)
 *   onState(s)      {state: 'connecting'|'open'|'down', retryInMs, failures, wasOpen, code}
 */
export class LiveSocket {
  constructor(o) {
    this.o = o;
    this.ws = null;
    this.failures = 0;
    this.everOpen = false;
    this.retryTimer = 0;
    this.watchdog = 0;
    this.silenceMs = 15000;
    this.stopped = true;
  }

  /** Starts connecting (again). */
  start() {
    this.stopped = false;
    this.connect();
  }

  /** Closes the connection for good. */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.watchdog);
    this.abandon(1000, 'client stopped');
  }

  /** Reconnects at once (the banner's "retry now"). */
  retryNow() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    this.abandon(1000, 'reconnecting');
    this.connect();
  }

  /** Whether the connection is up. */
  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.helloSeen;
  }

  /** Sends a JSON message when connected; returns whether it was sent. */
  send(msg) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Subscribes to jobs (their current state comes back as snapshots). */
  subscribe(ids) {
    if (ids.length) this.send({ type: 'subscribe', jobs: ids });
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.helloSeen = false;
    this.emit({ state: 'connecting' });
    let ws;
    try {
      ws = new WebSocket(this.o.url(), this.o.protocols());
    } catch (e) {
      this.scheduleRetry(0, String(e));
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this.kick();
      if (typeof ev.data !== 'string') {
        this.o.onPreview(ev.data);
        return;
      }
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg.type === 'hello') {
        this.helloSeen = true;
        this.failures = 0;
        this.everOpen = true;
        if (msg.metrics_interval_ms > 0) this.silenceMs = Math.max(3 * msg.metrics_interval_ms, 6000) + 4000;
        this.kick();
        this.emit({ state: 'open' });
        this.subscribe(this.o.activeJobs());
      }
      this.o.onMessage(msg);
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      clearTimeout(this.watchdog);
      if (!this.stopped) this.scheduleRetry(ev.code, ev.reason);
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  /** Restarts the silence watchdog. */
  kick() {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      // Nothing arrived for several metrics intervals: the connection is
      // dead even if the browser has not noticed yet.
      this.abandon(4000, 'silent connection');
      if (!this.stopped) this.scheduleRetry(4000, 'no messages from the server');
    }, this.silenceMs);
  }

  /** Drops the current socket without waiting for its close handshake. */
  abandon(code, reason) {
    const ws = this.ws;
    this.ws = null;
    clearTimeout(this.watchdog);
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(code, reason);
      } catch { /* already closing */ }
    }
  }

  scheduleRetry(code, reason) {
    const wasOpen = this.helloSeen;
    this.helloSeen = false;
    this.failures++;
    const base = BACKOFF_MS[Math.min(this.failures - 1, BACKOFF_MS.length - 1)];
    const delay = Math.round(base * (0.8 + 0.4 * Math.random()));
    this.emit({ state: 'down', retryInMs: delay, failures: this.failures, wasOpen, everOpen: this.everOpen, code, reason });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  emit(s) {
    this.o.onState(s);
  }
}
