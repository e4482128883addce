"""Running wrk with a Lua script that this module writes, and reading back what it measured.

wrk runs one Lua state per thread. ``setup`` (in the main state) numbers the threads; each
thread's ``init`` reads its own slice of a lines file, so a body meant for one use is sent by
one thread once. ``done`` (main state again) gathers the per-thread counters and prints one
``BENCH_RESULT {json}`` line.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from string import Template

from . import machine, settings

RESULT_PREFIX = "BENCH_RESULT "


class Feed(Enum):
    """How a script turns the lines of its file into requests."""

    NONE = "none"  # the same request every time
    BEARER = "bearer"  # each line is an access token, used round-robin
    CYCLE = "cycle"  # each line is a body, the thread's slice used round-robin
    ONCE = "once"  # each line is a body sent exactly once; a thread that runs out stops


@dataclass(frozen=True)
class Load:
    """One wrk invocation."""

    name: str
    method: str
    path: str
    feed: Feed = Feed.NONE
    lines: Path | None = None
    threads: int = settings.THREADS
    connections: int = settings.CONNECTIONS
    duration_s: int = 0  # 0: settings.DURATION_S, read when the run starts
    rate: float = 0.0  # requests/s over all threads; 0 for as fast as the service answers


@dataclass(frozen=True)
class Result:
    requests: int
    ok: int
    non2xx: int
    socket_errors: int
    timeouts: int
    exhausted: bool
    duration_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    statuses: dict[str, int]
    # The share of all cores that other processes used during the run (see bench.machine).
    others: float | None = None

    @property
    def rate(self) -> float:
        """Successful (2xx) responses per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors + self.timeouts


def lua_string(value: str) -> str:
    return '"' + re.sub(r'(["\\])', r"\\\1", value).replace("\n", "\\n") + '"'


def script(load: Load) -> str:
    lines = lua_string(str(load.lines)) if load.lines is not None else "nil"
    return _TEMPLATE.substitute(
        method=lua_string(load.method),
        path=lua_string(load.path),
        feed=lua_string(load.feed.value),
        lines=lines,
        threads=load.threads,
        interval_ms=f"{load.threads * 1000 / load.rate:.4f}" if load.rate > 0 else "0",
    )


def command(load: Load, url: str, script_path: Path) -> list[str]:
    return [
        wrk_binary(),
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{seconds(load)}s",
        f"--timeout={settings.WRK_TIMEOUT_S}s",
        f"-s{script_path}",
        url,
    ]


def seconds(load: Load) -> int:
    return load.duration_s or settings.DURATION_S


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed (scripts/bench installs the Debian package)")
    return found


def start(load: Load, base_url: str, workdir: Path) -> subprocess.Popen[str]:
    """Start wrk on ``base_url`` (a loopback address) without waiting for it."""
    if not base_url.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise ValueError("the bench loads only a service on this machine")
    script_path = workdir / f"{load.name}.lua"
    script_path.write_text(script(load))
    return subprocess.Popen(  # noqa: S603  (wrk on a loopback URL, a script we wrote)
        command(load, base_url, script_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(load: Load, proc: subprocess.Popen[str]) -> Result:
    try:
        out, err = proc.communicate(timeout=seconds(load) + settings.WRK_TIMEOUT_S + 30)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"wrk ({load.name}) did not finish in time") from None
    finally:
        stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk ({load.name}) failed ({proc.returncode}): {err.strip()[-500:]}")
    return parse(out, load.name)


def stop(proc: subprocess.Popen[str]) -> None:
    """End a wrk that is still running (the bench is stopping early)."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def run(load: Load, base_url: str, workdir: Path) -> Result:
    before = machine.sample()
    result = finish(load, start(load, base_url, workdir))
    return replace(result, others=machine.others_share(before, machine.sample()))


def run_together(loads: list[Load], base_url: str, workdir: Path) -> list[Result]:
    """Several wrk runs at the same time (a load and a probe beside it)."""
    before = machine.sample()
    procs = [start(load, base_url, workdir) for load in loads]
    try:
        results = [finish(load, proc) for load, proc in zip(loads, procs, strict=True)]
    finally:
        for proc in procs:
            stop(proc)
    others = machine.others_share(before, machine.sample())
    return [replace(r, others=others) for r in results]


def parse(output: str, name: str = "wrk") -> Result:
    for line in output.splitlines():
        if line.startswith(RESULT_PREFIX):
            data = json.loads(line[len(RESULT_PREFIX) :])
            return Result(
                requests=int(data["requests"]),
                ok=int(data["ok"]),
                non2xx=int(data["non2xx"]),
                socket_errors=int(data["connect"] + data["read"] + data["write"]),
                timeouts=int(data["timeout"]),
                exhausted=bool(data["exhausted"]),
                duration_s=float(data["duration_us"]) / 1e6,
                p50_ms=float(data["p50_ms"]),
                p95_ms=float(data["p95_ms"]),
                p99_ms=float(data["p99_ms"]),
                statuses={str(k): int(v) for k, v in data["statuses"].items()},
            )
    raise RuntimeError(f"{name}: no result line in wrk's output:\n{output[-1000:]}")


# Counters are globals: `thread:get` reads globals of a thread's Lua state.
_TEMPLATE = Template(
    r"""-- Written by bench/wrk.py for one run; see there.
local METHOD = $method
local PATH = $path
local FEED = $feed
local LINES = $lines
local THREADS = $threads
local INTERVAL_MS = $interval_ms

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

ok_count = 0
non2xx = 0
exhausted = 0
statuses = {}
local items = {}
local n = 0
local fixed = nil
local json_headers = {["Content-Type"] = "application/json"}

function init(args)
  math.randomseed(os.time() * 100 + tid)
  if LINES ~= nil then
    local i = 0
    for line in io.lines(LINES) do
      -- A thread keeps its own slice, so a single-use body is never sent by two threads.
      if FEED == "bearer" or i % THREADS == tid then
        items[#items + 1] = line
      end
      i = i + 1
    end
    if #items == 0 and FEED == "cycle" then
      -- Fewer lines than threads: share them rather than send empty bodies.
      for line in io.lines(LINES) do
        items[#items + 1] = line
      end
    end
  end
  if FEED == "none" then
    fixed = wrk.format(METHOD, PATH)
  end
end

function request()
  if fixed ~= nil then
    return fixed
  end
  n = n + 1
  if FEED == "bearer" then
    local token = items[(n - 1) % #items + 1]
    return wrk.format(METHOD, PATH, {["Authorization"] = "Bearer " .. token})
  end
  if FEED == "cycle" then
    return wrk.format(METHOD, PATH, json_headers, items[(n - 1) % #items + 1])
  end
  if n > #items then
    -- Out of prepared bodies: stop this thread; the rate of the run is then a lower bound.
    exhausted = 1
    wrk.thread:stop()
    return wrk.format("GET", "/healthz")
  end
  return wrk.format(METHOD, PATH, json_headers, items[n])
end

if INTERVAL_MS > 0 then
  -- Pacing: each thread hands out send slots INTERVAL_MS apart to whichever of its
  -- connections is free, so the rate holds whatever the latency (as long as enough
  -- connections are free). A backlog older than a second is dropped, not sent in a burst.
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk_id, bench_timespec *tp);
  ]]
  local ts = ffi.new("bench_timespec")
  local CLOCK_MONOTONIC = 1

  local function now_ms()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end

  local next_slot = nil

  function delay()
    local now = now_ms()
    if next_slot == nil or next_slot < now - 1000 then
      next_slot = now + math.random() * INTERVAL_MS
    end
    local slot = next_slot
    next_slot = next_slot + INTERVAL_MS
    return math.max(0, math.floor(slot - now + 0.5))
  end
end

function response(status, headers, body)
  if exhausted == 1 then
    return
  end
  if status >= 200 and status < 300 then
    ok_count = ok_count + 1
  else
    non2xx = non2xx + 1
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
end

function done(summary, latency, requests)
  local ok, bad, ran_out = 0, 0, 0
  local codes = {}
  for _, t in ipairs(threads) do
    ok = ok + t:get("ok_count")
    bad = bad + t:get("non2xx")
    ran_out = ran_out + t:get("exhausted")
    for code, count in pairs(t:get("statuses")) do
      codes[code] = (codes[code] or 0) + count
    end
  end
  local parts = {}
  for code, count in pairs(codes) do
    parts[#parts + 1] = string.format('"%s":%d', code, count)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"errors":%d,"ok":%d,"non2xx":%d,"exhausted":%s,' ..
    '"duration_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"p50_ms":%.3f,"p95_ms":%.3f,"p99_ms":%.3f,"statuses":{%s}}\n',
    summary.requests, bad + e.connect + e.read + e.write + e.timeout, ok, bad,
    ran_out > 0 and "true" or "false", summary.duration,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000,
    table.concat(parts, ",")))
end
"""
)
