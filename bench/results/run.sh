#!/bin/sh
# Reproduces the runs in bench/results (the README's Performance section).
# About 10 minutes on 2 cores. Reports and charts go to bench/out/final.
set -e
cd "$(dirname "$0")/../.."
bin=$(mktemp -d)/bench
go build -o "$bin" ./bench
o=bench/out/final
mkdir -p $o
"$bin" -duration 10s -out $o/closed.json | tee $o/closed.txt
"$bin" -duration 10s -authz-delay 50ms -out $o/closed-slow-authz.json | tee $o/closed-slow-authz.txt
half=$(awk '$1 == "accepted/s" { print int($4 / 2) }' $o/closed.txt)
"$bin" -duration 10s -rate "$half" -out $o/open-half.json | tee $o/open-half.txt
"$bin" -duration 60s -rate 8000 -authz-delay 1ms -out $o/open60.json | tee $o/open60.txt
for n in 100000 300000 1000000; do
	"$bin" -workload burst -burst $n -out $o/burst-$n.json | tee $o/burst-$n.txt
done
"$bin" -workload burst -burst 100000 -fake-delay 50ms -out $o/burst-100000-slow.json | tee $o/burst-100000-slow.txt
