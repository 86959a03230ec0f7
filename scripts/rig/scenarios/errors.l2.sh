#!/bin/sh
# Scenario errors (L2 side): stay up until L1 stops the VMM with SIGTERM.
sleep 120
