#!/bin/bash
# run "$2 $3" after no process matches the pattern $1 (a pattern this script's own arguments cannot match: pass it with a '[x]' class)
cd /work/main
while pgrep -f "$1" >/dev/null; do sleep 15; done
"$2" $3
