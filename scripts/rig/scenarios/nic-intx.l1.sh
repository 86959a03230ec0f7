#!/bin/sh
# Scenario nic-intx: e1000e passed through with IntMode=0 (see nic-common.sh).
NIC_INTMODE=0
. /rig/scenarios/nic-common.sh
