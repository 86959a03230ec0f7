#!/bin/sh
# Scenario edu-twice: two vfio-vmm runs in a row on the same edu device in one
# L1 session; the second must work as the first (everything was released).
. /rig/scenarios/edu-common.sh
edu_run first
edu_run second
