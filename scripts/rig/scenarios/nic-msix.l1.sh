#!/bin/sh
# Scenario nic-msix: e1000e passed through with IntMode=2 (see nic-common.sh).
NIC_INTMODE=2
. /rig/scenarios/nic-common.sh
