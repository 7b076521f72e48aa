-- wrk reporter for bench/run.sh and bench/postgres.sh: prints one machine-readable line at the end
-- of a run (bench/random_ids.lua loads it for the same line).
-- Defines only done(), so wrk keeps its pre-built static request (no per-request Lua cost).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
