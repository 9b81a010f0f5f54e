#!/bin/sh
# htdask's worker start: the executable of every worker job, shipped by HTCondor's file transfer
# (htdask/domain/jobspec.py). It runs on the execute host, in the job's scratch directory, and needs only sh.
#
#   worker_start.sh PROGRAM [ARGUMENT...]
#
# - HTDASK_PACKED_ENV=NAME: unpack the transferred NAME (.tar.gz of conda-pack / venv-pack) into ./env
#   (and run its bin/conda-unpack when there is one) before PROGRAM (e.g. env/bin/python) is looked up.
# - TLS variables naming files of the sandbox by relative name become absolute paths.
# - HTDASK_SERVICE=NAME:PORT (Docker bridge network): the worker listens on PORT in its container and
#   advertises the execute host's address and the NAME_HostPort HTCondor published in the job ad
#   ($_CONDOR_JOB_AD, waited for: HTCondor's starter adds it shortly after the start), as dask-chtc does.
#   HTDASK_PROTOCOL: tcp or tls. HTDASK_NANNY_SERVICE=NAME:PORT: the same for the worker's nanny
#   (--nanny-port PORT; the host's address and NAME_HostPort advertised by a nanny preload, as `dask worker`
#   has no option for a nanny's contact address), so the scheduler reaches it to restart the worker.
# - PROGRAM missing on the execute host: one line on stderr and exit 86; the job description holds a
#   job that exits 86 (on_exit_hold) with a reason `htdask status` shows, instead of a crash loop.
set -u
MISSING=86
cd "${_CONDOR_SCRATCH_DIR:-.}" || exit $MISSING
say() { echo "htdask worker start on $(hostname 2>/dev/null || echo '?'): $*" >&2; }

if [ -n "${HTDASK_PACKED_ENV:-}" ]; then
    if [ ! -f "$HTDASK_PACKED_ENV" ]; then
        say "the packed environment $HTDASK_PACKED_ENV was not transferred"; exit $MISSING
    fi
    mkdir -p env && tar -xzf "$HTDASK_PACKED_ENV" -C env || { say "cannot unpack $HTDASK_PACKED_ENV"; exit $MISSING; }
    if [ -x env/bin/conda-unpack ]; then env/bin/conda-unpack >/dev/null 2>&1 || true; fi
fi

for var in DASK_DISTRIBUTED__COMM__TLS__CA_FILE DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT \
           DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY DASK_GATEWAY_API_TOKEN; do
    eval "val=\${$var:-}"
    case "$val" in
        ""|/*) ;;
        ./*) eval "export $var=\"\$PWD/\${val#./}\"" ;;
        *) [ "$var" = DASK_GATEWAY_API_TOKEN ] || eval "export $var=\"\$PWD/\$val\"" ;;
    esac
done

prog="${1:-}"
if [ -z "$prog" ]; then say "no program to run"; exit $MISSING; fi
case "$prog" in
    */*) [ -f "$prog" ] && [ -x "$prog" ] || { say "the worker's program $prog does not exist on this execute host"; exit $MISSING; } ;;
    *) command -v "$prog" >/dev/null 2>&1 || { say "the worker's program $prog is not on this execute host's PATH"; exit $MISSING; } ;;
esac
# a program is a binary or a script with #! (sh would run anything else as shell commands)
path=$(command -v "$prog" 2>/dev/null || echo "$prog")
if [ -f "$path" ] && command -v od >/dev/null 2>&1; then
    magic=$(head -c 4 "$path" 2>/dev/null | od -An -c | tr -d ' \n')
    case "$magic" in
        '#!'*|177ELF) ;;
        *) say "the worker's program $path is not a program (neither a binary nor a #! script)"; exit $MISSING ;;
    esac
fi

ad="${_CONDOR_JOB_AD:-.job.ad}"
# host_port NAME: the NAME_HostPort HTCondor's starter published in the job ad (waited for)
host_port() {
    waited=0
    while :; do
        hp=$(sed -n "s/^$1_HostPort *= *\([0-9][0-9]*\).*/\1/p" "$ad" 2>/dev/null | head -n 1)
        if [ -n "$hp" ]; then echo "$hp"; return 0; fi
        if [ "$waited" -ge "${HTDASK_HOSTPORT_WAIT:-300}" ]; then
            say "no $1_HostPort in the job ad after ${waited}s: is container_service_names honoured here?"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

if [ -n "${HTDASK_SERVICE:-}" ]; then
    name="${HTDASK_SERVICE%%:*}"
    cport="${HTDASK_SERVICE##*:}"
    hport=$(host_port "$name") || exit $MISSING
    host=""
    for f in "$ad" "${_CONDOR_MACHINE_AD:-.machine.ad}"; do
        host=$(sed -n 's/^StartdIpAddr *= *"<\([0-9.]*\):.*/\1/p' "$f" 2>/dev/null | head -n 1)
        [ -n "$host" ] && break
    done
    if [ -z "$host" ]; then
        host=$(sed -n 's/^RemoteHost *= *"[^@]*@\([^"]*\)".*/\1/p' "$ad" 2>/dev/null | head -n 1)
    fi
    if [ -z "$host" ]; then say "cannot tell the execute host's address from the job ad"; exit $MISSING; fi
    proto="${HTDASK_PROTOCOL:-tcp}"
    set -- "$@" --listen-address "$proto://0.0.0.0:$cport" --contact-address "$proto://$host:$hport"
    say "listening on $proto://0.0.0.0:$cport, advertised as $proto://$host:$hport"
    if [ -n "${HTDASK_NANNY_SERVICE:-}" ]; then
        nport=$(host_port "${HTDASK_NANNY_SERVICE%%:*}") || exit $MISSING
        ncport="${HTDASK_NANNY_SERVICE##*:}"
        export HTDASK_NANNY_CONTACT="$proto://$host:$nport"
        # a preload given as text (distributed.preloading): the nanny's address before it registers
        set -- "$@" --nanny-port "$ncport" --preload-nanny "import os
def dask_setup(nanny):  # htdask worker start: advertise the port HTCondor published for the nanny
    nanny._address = os.environ['HTDASK_NANNY_CONTACT']
"
        say "nanny listening on port $ncport, advertised as $HTDASK_NANNY_CONTACT"
    fi
fi

exec "$@"
