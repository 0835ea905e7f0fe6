# Issue 16 scenarios on a GPU host: `python3 scripts/memory-scenarios.py 6` (kiln serve --memory-budget 6GiB,
# two SD 1.5 models, SDXL and kiln-shapes alternating: per-job latency, failures, /v1/models sharing) or `... 4`
# (SDXL 1024² at 4GiB). Needs ./kiln in the working directory; writes scen6.json / scen4.json to $OUT.
import json, os, subprocess, sys, time, urllib.request
OUT = os.environ.get("OUT", ".")
def req(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    r = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(r, timeout=120) as f:
        return json.loads(f.read() or b"{}")
def serve(name, budget, models, port):
    cfg = {"models": models, "synthetic_models": True, "memory_budget": budget, "listen": "127.0.0.1:%d" % port,
           "data_dir": "/tmp/kd-" + name}
    with open("/tmp/%s.yaml" % name, "w") as f:
        json.dump(cfg, f)
    log = open(os.path.join(OUT, name + "-serve.log"), "w")
    p = subprocess.Popen(["./kiln", "serve", "--config", "/tmp/%s.yaml" % name], stdout=log, stderr=subprocess.STDOUT)
    base = "http://127.0.0.1:%d" % port
    for _ in range(600):
        try:
            urllib.request.urlopen(base + "/readyz", timeout=2); break
        except Exception:
            time.sleep(0.2)
    return p, base
def job(base, body, limit=240):
    t0 = time.time()
    j = req("POST", base + "/v1/jobs", body)
    while True:
        s = req("GET", base + "/v1/jobs/" + j["id"])
        if s["status"] in ("succeeded", "failed", "canceled"):
            return time.time() - t0, s
        if time.time() - t0 > limit:
            return time.time() - t0, s
        time.sleep(0.05)
res = {"gpu": subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip(),
       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
which = sys.argv[1]
if which == "6":
    p, base = serve("b6", "6GiB", {"sd-a": "synthetic:sd15", "sd-b": "synthetic:sd15", "sdxl": "synthetic:sdxl"}, 8791)
    runs = []
    order = ["sd-a", "sd-b", "sdxl", "kiln-shapes", "sd-a", "sd-b", "sdxl", "sd-a", "kiln-shapes", "sd-b"]
    for m in order:
        body = {"prompt": "a red fox", "model": m, "steps": 20, "sampler": "euler", "guidance": 7.5, "seed": 1}
        if m == "sdxl": body.update({"width": 1024, "height": 1024, "guidance": 5})
        try:
            dt, s = job(base, body)
            runs.append({"model": m, "seconds": round(dt, 3), "status": s["status"], "error": s.get("error"), "memory": s.get("memory")})
        except Exception as e:
            runs.append({"model": m, "exception": str(e)})
        print(runs[-1], flush=True)
    res["runs6"] = runs
    try: res["models6"] = req("GET", base + "/v1/models")
    except Exception as e: res["models6"] = str(e)
    p.terminate(); p.wait(timeout=30)
else:
    p, base = serve("b4", "4GiB", {"sdxl": "synthetic:sdxl"}, 8792)
    body = {"prompt": "a red fox", "model": "sdxl", "steps": 20, "sampler": "euler", "guidance": 5, "seed": 1, "width": 1024, "height": 1024}
    runs = []
    for _ in range(2):
        try:
            dt, s = job(base, body)
            runs.append({"seconds": round(dt, 3), "status": s["status"], "error": s.get("error"), "memory": s.get("memory")})
        except Exception as e:
            runs.append({"exception": str(e)})
        print(runs[-1], flush=True)
    res["runs4"] = runs
    p.terminate(); p.wait(timeout=30)
with open(os.path.join(OUT, "scen%s.json" % which), "w") as f:
    json.dump(res, f, indent=1)
