# Shared by scripts/bench.sh and scripts/bench_s3.sh (sourced, not run):
# how one command is timed, so both modes measure the same way.

# fresh_memory WORKDIR: write and delete 1 GiB so the measured command starts
# with host-backed free memory. This VM's host takes back guest memory that
# stays free for a few seconds (virtio-balloon free page reporting), and a
# command that then takes fresh pages pays several microseconds for each as
# it comes back: copying the 688 MB dump with dd took 2.76 s after a pause
# and 0.14 s right after another copy; cairn's restore 1.22 s or 0.56-0.81 s,
# restic's 2.24 s or 1.44-1.57 s. (In /dev/shm when there is one: no file
# system writeback to overlap with the measured command.)
fresh_memory() {
  local pre=$1/prewarm
  [ -d /dev/shm ] && [ -w /dev/shm ] && pre=/dev/shm/cairn-bench-prewarm
  dd if=/dev/zero of="$pre" bs=4M count=256 status=none
  rm -f "$pre"
}

# timed TIMEFILE LOG CMD...: runs CMD under /usr/bin/time -v with its output
# appended to LOG; on success prints "SECONDS PEAK_RSS_KIB", on failure
# prints the log's tail to stderr and returns 1.
timed() {
  local t=$1 log=$2
  shift 2
  if ! /usr/bin/time -v -o "$t" "$@" >>"$log" 2>&1; then
    tail -5 "$log" >&2
    return 1
  fi
  awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; secs=s}
              /Maximum resident set size/ {rss=$2}
              END {print secs, rss}' "$t"
}
