#!/bin/sh
# usage: record.sh <log> <perf.data> ; runs the harness with the profiling binary and records the c=16 search window
LOG=$1; DATA=$2
cd /work/search2
(BENCH_SERVER_BIN=/work/search2/target/prof/release/agentskills-mcp LOAD_ONLY=ceiling,search CARGO_TARGET_DIR=/work/search2/target CARGO_BUILD_JOBS=1 cargo bench --bench load > $LOG 2>&1 &)
for i in $(seq 1 1200); do pid=$(grep -o "service pid [0-9]*, corpus ready" $LOG | grep -o "[0-9]*" | head -1); [ -n "$pid" ] && break; sleep 0.5; done
for i in $(seq 1 2400); do grep -q "search_skills.*|   1 |" $LOG && break; sleep 0.1; done
echo pid=$pid
perf record -F 999 -g --call-graph dwarf -o $DATA -p $pid -- sleep 5 2>&1 | tail -1
