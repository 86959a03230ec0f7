# shellcheck shell=bash disable=SC2034 # its variables are run.sh's
# Reads scripts/rig/scenarios.table (sourced by run.sh; see that file for its
# format). Fills SCENARIOS (names, in table order) and, per name, DEVSET
# (a device set or -), TMO (seconds or -), NEEDS (" qemu iperf socat fio host vmlinux disk " or a
# part of it) and SKIP; DEVARGS holds each device set's QEMU arguments.
# A malformed line, or a scenario file without a line, ends run.sh with status 2.
declare -A DEVARGS=() DEVSET=() TMO=() NEEDS=() SKIP=()
SCENARIOS=()

table_error() { echo "rig: $TABLE:$1: $2" >&2; exit 2; }

read_table() {
    local n=0 line kind name rest set tmo needs skip need f
    TABLE=$HERE/scenarios.table
    [ -f "$TABLE" ] || { echo "rig: no $TABLE" >&2; exit 2; }
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        read -r kind name rest <<< "$line"
        case $kind in
            '' | '#'*) ;;
            devices)
                [ -n "$rest" ] || table_error $n "want: devices SET QEMU-ARGS..."
                case $name in -|custom) table_error $n "'$name' cannot name a device set" ;; esac
                [ -z "${DEVARGS[$name]+x}" ] || table_error $n "device set $name declared twice"
                DEVARGS[$name]=$rest ;;
            scenario)
                read -r set tmo needs skip <<< "$rest"
                [ -n "$needs" ] || table_error $n "want: scenario NAME DEVICES TIMEOUT NEEDS [SKIP REASON...]"
                if [[ ! $name =~ ^[a-z0-9][a-z0-9-]*$ ]] || [ "$name" = custom ]; then
                    table_error $n "'$name' is not a scenario name (lower case, digits, -; not custom)"
                fi
                [ -z "${DEVSET[$name]+x}" ] || table_error $n "scenario $name declared twice"
                [ "$set" = - ] || [ -n "${DEVARGS[$set]+x}" ] ||
                    table_error $n "$name: no device set '$set' (declare it above the scenario)"
                [ "$tmo" = - ] || [[ $tmo =~ ^[1-9][0-9]*$ ]] || table_error $n "$name: TIMEOUT '$tmo' is not seconds or -"
                [ "$needs" != - ] || needs=""
                for need in ${needs//,/ }; do
                    case $need in qemu|iperf|socat|fio|host|vmlinux|disk) ;; *) table_error $n "$name: unknown need '$need' (qemu, iperf, socat, fio, host, vmlinux, disk)" ;; esac
                done
                [ -f "$HERE/scenarios/$name.l1.sh" ] || table_error $n "$name: no scenarios/$name.l1.sh"
                [[ ,$needs, == *,host,* ]] || [ ! -f "$HERE/scenarios/$name.host.sh" ] ||
                    table_error $n "$name: scenarios/$name.host.sh exists but NEEDS lacks host"
                [[ ,$needs, != *,host,* ]] || [ -f "$HERE/scenarios/$name.host.sh" ] ||
                    table_error $n "$name: NEEDS has host but there is no scenarios/$name.host.sh"
                SCENARIOS+=("$name")
                DEVSET[$name]=$set TMO[$name]=$tmo NEEDS[$name]=" ${needs//,/ } " SKIP[$name]=$skip ;;
            *) table_error $n "a line starts with devices, scenario or #" ;;
        esac
    done < "$TABLE"
    for f in "$HERE"/scenarios/*.l1.sh; do
        name=${f##*/}
        name=${name%.l1.sh}
        [ -n "${DEVSET[$name]+x}" ] || { echo "rig: scenarios/$name.l1.sh has no line in $TABLE" >&2; exit 2; }
    done
}

# needs NAME WHAT: does scenario NAME need WHAT (qemu, iperf, socat, fio, host, vmlinux, disk)?
needs() { [[ ${NEEDS[$1]} == *" $2 "* ]]; }
