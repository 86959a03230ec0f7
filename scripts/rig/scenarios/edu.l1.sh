#!/bin/sh
# Scenario edu: QEMU's edu device passed to L2 by vfio-vmm (see edu-common.sh).
. /rig/scenarios/edu-common.sh
edu_run vfio-vmm
