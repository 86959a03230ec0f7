#!/bin/sh
# Scenario nic-msi: e1000e passed through with IntMode=1 (see nic-common.sh).
NIC_INTMODE=1
. /rig/scenarios/nic-common.sh
