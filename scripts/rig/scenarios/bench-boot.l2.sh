#!/bin/sh
# Benchmark bench-boot (L2 side): hold still briefly so L1 can sample the VMM's memory.
echo "RIG-L2: sample"
sleep 1
