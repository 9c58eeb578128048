#!/usr/bin/env bash
# An MLflow tracking server for a team or a Ray cluster: runs and metrics in PostgreSQL,
# artifacts served by the server itself (clients upload and download through it, so the
# cluster's nodes need neither the artifact store's credentials nor a shared disk).
#
#   clusters/mlflow-server.sh --artifacts DEST [--port 5000] [--host 127.0.0.1]
#       (--db-uri postgresql://USER:PASSWORD@HOST:PORT/DB | --data DIR [--pg-port 5432])
#
#   --artifacts DEST  where artifacts live: a local or shared path (created if missing) or a
#                     URI such as s3://bucket/prefix (the server needs boto3 and AWS
#                     credentials: the usual AWS variables or the instance role).
#   --port, --host    where the server listens (default 127.0.0.1:5000). For a cluster use
#                     --host 0.0.0.0 on the head node or on a machine the nodes reach.
#   --db-uri URI      an existing PostgreSQL database (a team's); the server creates its tables.
#                     postgresql:// is read as postgresql+psycopg2:// (SQLAlchemy 2.1 would
#                     pick psycopg 3); postgresql+psycopg:// uses psycopg 3. To keep the
#                     password off this script's command line, leave it out of the URI and
#                     set PGPASSWORD or ~/.pgpass (libpq reads both).
#   --data DIR        a PostgreSQL cluster of this script's own in DIR, started and stopped
#                     with the server and reused on the next start: DIR/pgdata (the cluster),
#                     DIR/postgresql.log, the unix socket in DIR, and DIR/mlflow-db-password.
#                     It listens on 127.0.0.1:--pg-port only. Debian's server binaries are used
#                     (the newest /usr/lib/postgresql/*/bin; apt-get install postgresql; or set
#                     PG_BIN). Run as root, PostgreSQL runs as the `postgres` user: DIR is
#                     given to it, and a parent directory it cannot enter gets o+x (a note
#                     says which).
#   Authentication (--data): the database `mlflow` belongs to the role `mlflow`, which logs in
#   over TCP on 127.0.0.1 with a password (scram-sha-256) generated on the first start and kept
#   in DIR/mlflow-db-password (mode 600); the unix socket in DIR (mode 700) is for DIR's owner.
#
# The server runs in the foreground (python -m mlflow server --workers 1) with the Python in
# $PYTHON (default python3), which needs mlflow and psycopg2 (pip install psycopg2-binary, or
# the project's `server` extra). The backend URI reaches mlflow in MLFLOW_BACKEND_STORE_URI (its
# --backend-store-uri), so a password in it does not show in `ps`. Once the server answers
# /health, stdout gets one line: `export MLFLOW_TRACKING_URI=http://HOST:PORT`; every run and
# sweep started with that variable logs there. Ctrl-C or SIGTERM stops the server and, with
# --data, the PostgreSQL it started; nothing is left running.
#
# A team: one machine runs it (e.g. `make mlflow-server MLFLOW_HOST=0.0.0.0`, or under systemd
# or tmux), everyone exports MLFLOW_TRACKING_URI=http://that-host:5000. A Ray cluster: run it on
# the head node with --host 0.0.0.0 and set MLFLOW_TRACKING_URI=http://<head-ip>:5000 where the
# sweep runs (clusters/aws-*.yaml). MLflow answers only requests whose Host header is
# localhost or a private IP unless told otherwise: reached by a DNS name, it needs
# MLFLOW_SERVER_ALLOWED_HOSTS='name:5000,localhost:*,127.0.0.1:*,10.*' (the list replaces
# MLflow's defaults). The server has no login of its own: keep the port inside the cluster's
# network. MLflow's server-side jobs (GenAI evaluation; 8 more processes) stay off unless
# MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true.
#
# Exit status: 2 for an error in the arguments (one line on stderr naming the flag; a port
# already taken counts), 1 when something fails to start, 143 after SIGTERM, 130 after Ctrl-C,
# else the status mlflow server exited with.
set -euo pipefail

PROG=${0##*/}
PYTHON=${PYTHON:-python3}

usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; }
note() { echo "$PROG: $*" >&2; }
die() { note "$*"; exit 1; }
die_arg() { note "$*"; exit 2; }

ARTIFACTS='' PORT=5000 HOST=127.0.0.1 DB_URI='' DATA='' PG_PORT=''
while (($#)); do
    flag=$1
    case $flag in
        -h | --help) usage; exit 0 ;;
        --artifacts=* | --port=* | --host=* | --db-uri=* | --data=* | --pg-port=*)
            value=${flag#*=}; flag=${flag%%=*}; shift ;;
        --artifacts | --port | --host | --db-uri | --data | --pg-port)
            if (($# < 2)) || [[ $2 == --* ]]; then die_arg "$flag needs a value"; fi
            value=$2; shift 2 ;;
        *) die_arg "unknown argument $flag (see $PROG --help)" ;;
    esac
    [[ -n $value ]] || die_arg "$flag needs a value"
    case $flag in
        --artifacts) ARTIFACTS=$value ;;
        --port) PORT=$value ;;
        --host) HOST=$value ;;
        --db-uri) DB_URI=$value ;;
        --data) DATA=$value ;;
        --pg-port) PG_PORT=$value ;;
    esac
done

valid_port() { [[ $1 =~ ^[0-9]{1,5}$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)); }
[[ -n $ARTIFACTS ]] || die_arg "--artifacts is required (a path or a URI such as s3://bucket/prefix)"
valid_port "$PORT" || die_arg "--port must be a port number (1-65535), not '$PORT'"
[[ $HOST =~ ^[A-Za-z0-9._:-]+$ ]] || die_arg "--host must be a host name or an IP address, not '$HOST'"
if [[ -n $DB_URI && -n $DATA ]]; then die_arg "--db-uri and --data exclude each other"; fi
if [[ -z $DB_URI && -z $DATA ]]; then
    die_arg "--db-uri URI or --data DIR is required (an existing PostgreSQL, or one of its own)"
fi
if [[ -n $DB_URI ]]; then
    [[ $DB_URI =~ ^postgresql(\+psycopg2|\+psycopg)?://.+ ]] ||
        die_arg "--db-uri must be postgresql://USER:PASSWORD@HOST:PORT/DB"
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; psycopg2 is the driver installed.
    [[ $DB_URI == postgresql://* ]] && DB_URI=postgresql+psycopg2://${DB_URI#postgresql://}
    [[ -z $PG_PORT ]] || die_arg "--pg-port applies only with --data (the port is in --db-uri)"
fi
if [[ -n $DATA ]]; then
    PG_PORT=${PG_PORT:-5432}
    valid_port "$PG_PORT" || die_arg "--pg-port must be a port number (1-65535), not '$PG_PORT'"
    # The path goes into PostgreSQL's settings and the socket's name (107 bytes at most).
    [[ $DATA =~ ^[A-Za-z0-9._/+@%=~-]+$ ]] ||
        die_arg "--data: use a path of letters, digits and ._/+@%=~- only, not '$DATA'"
    [[ -e $DATA && ! -d $DATA ]] && die_arg "--data: $DATA exists and is not a directory"
    [[ $DATA == /* ]] || DATA=$PWD/$DATA
    DATA=$(realpath -m -- "$DATA")
    socket="$DATA/.s.PGSQL.$PG_PORT"
    ((${#socket} <= 107)) || die_arg "--data: path too long for PostgreSQL's socket ($socket)"
fi

# A port something already answers on (bash's /dev/tcp; 0.0.0.0 is checked on 127.0.0.1).
port_in_use() {
    local host=$1
    [[ $host == 0.0.0.0 ]] && host=127.0.0.1
    [[ $host == :: ]] && host=::1
    (exec 3<>"/dev/tcp/$host/$2") 2>/dev/null
}
# The address clients use: a wildcard bind is announced by this machine's first address.
client_host() {
    local host=$HOST
    if [[ $host == 0.0.0.0 || $host == :: ]]; then
        host=$(hostname -I 2>/dev/null | awk '{print $1}') || true
        [[ -n $host ]] || host=$(hostname)
    fi
    [[ $host == *:* ]] && host="[$host]"
    echo "$host"
}

# -- the Python that runs the server --------------------------------------------------------
command -v "$PYTHON" >/dev/null || die "PYTHON=$PYTHON: no such interpreter"
needed=(mlflow psycopg2)
[[ $DB_URI == postgresql+psycopg://* ]] && needed=(mlflow psycopg)
[[ $ARTIFACTS == s3://* ]] && needed+=(boto3)
missing=$("$PYTHON" -c 'import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' "${needed[@]}")
[[ -z $missing ]] || die "$PYTHON lacks: $missing (pip install mlflow psycopg2-binary boto3)"

# -- artifacts: a URI as given, a path made absolute and created ------------------------------
if [[ ! $ARTIFACTS =~ ^[A-Za-z][A-Za-z0-9+.-]*:// ]]; then
    mkdir -p -- "$ARTIFACTS" || die_arg "--artifacts: cannot create $ARTIFACTS"
    ARTIFACTS=$(cd -- "$ARTIFACTS" && pwd -P)
fi
port_in_use "$HOST" "$PORT" && die_arg "--port: something already listens on $HOST:$PORT"

# -- stopping what was started, whatever ends the script -------------------------------------
MLFLOW_PID='' PG_STARTED='' PGDATA='' PG_BIN=${PG_BIN:-}
as_pg() {  # PostgreSQL's programs: as `postgres` when root (it refuses to run as root)
    if ((EUID == 0)); then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
stop_mlflow() {
    [[ -n $MLFLOW_PID ]] || return 0
    local pid=$MLFLOW_PID i
    MLFLOW_PID=''
    # setsid made it a process group of its own: the signal reaches its uvicorn workers too.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    note "mlflow server stopped"
}
stop_pg() {
    [[ -n $PG_STARTED ]] || return 0
    PG_STARTED=''
    if as_pg "$PG_BIN/pg_ctl" stop -D "$PGDATA" -m fast -w -t 60 >/dev/null; then
        note "PostgreSQL in $DATA stopped"
    else
        note "PostgreSQL in $DATA did not stop: $PG_BIN/pg_ctl stop -D $PGDATA -m fast"
    fi
}
cleanup() { trap '' HUP INT TERM; stop_mlflow; stop_pg; }  # a second Ctrl-C waits
trap 'rc=$?; trap - EXIT; cleanup; exit $rc' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# -- a PostgreSQL of its own in DIR -----------------------------------------------------------
if [[ -n $DATA ]]; then
    PGDATA=$DATA/pgdata
    if [[ -z $PG_BIN ]]; then
        if [[ -f $PGDATA/PG_VERSION ]]; then  # an existing cluster needs its own major version
            version=$(<"$PGDATA/PG_VERSION")
            PG_BIN=/usr/lib/postgresql/$version/bin
            [[ -x $PG_BIN/pg_ctl ]] ||
                die "$PGDATA is a PostgreSQL $version cluster and $PG_BIN has no pg_ctl"
        else
            PG_BIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
            [[ -x $PG_BIN/initdb ]] ||
                die "no PostgreSQL server in /usr/lib/postgresql/*/bin (apt-get install postgresql, or set PG_BIN)"
        fi
    fi
    mkdir -p -- "$DATA"
    if ((EUID == 0)); then
        id postgres >/dev/null 2>&1 || die "running as root needs the system user postgres"
        # postgres must be able to enter every directory above DIR.
        path=''
        IFS=/ read -ra parts <<<"${DATA#/}"
        for part in "${parts[@]::${#parts[@]}-1}"; do
            path+=/$part
            if ! runuser -u postgres -- test -x "$path" 2>/dev/null; then
                chmod o+x -- "$path"
                note "gave others search permission (o+x) on $path, for the postgres user"
            fi
        done
        owner=$(stat -c %U -- "$DATA")
        if [[ $owner != postgres ]]; then
            [[ -z $(ls -A -- "$DATA") ]] ||
                die_arg "--data: $DATA belongs to $owner and is not empty; PostgreSQL runs as postgres"
            chown postgres: -- "$DATA"
        fi
    fi
    chmod 700 -- "$DATA" || die_arg "--data: cannot make $DATA private (chmod 700)"

    if [[ ! -f $PGDATA/PG_VERSION ]]; then
        note "creating a PostgreSQL cluster in $PGDATA ($PG_BIN)"
        as_pg "$PG_BIN/initdb" -D "$PGDATA" --username=postgres --encoding=UTF8 --no-locale \
            --auth-local=trust --auth-host=scram-sha-256 >"$DATA/initdb.log" 2>&1 ||
            { cat "$DATA/initdb.log" >&2; die "initdb failed (log above, in $DATA/initdb.log)"; }
        echo "include_if_exists = 'mlflow-server.conf'" | as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
    fi
    if as_pg "$PG_BIN/pg_ctl" status -D "$PGDATA" >/dev/null 2>&1; then
        # Already running (another instance of this script): use it, leave it running.
        PG_PORT=$(sed -n 4p "$PGDATA/postmaster.pid")
        note "using the PostgreSQL already running in $PGDATA (port $PG_PORT); it stays running"
    else
        port_in_use 127.0.0.1 "$PG_PORT" &&
            die_arg "--pg-port: something already listens on 127.0.0.1:$PG_PORT"
        as_pg tee "$PGDATA/mlflow-server.conf" >/dev/null <<EOF
# Written by clusters/mlflow-server.sh at each start.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$DATA'
unix_socket_permissions = 0700
EOF
        PG_STARTED=1
        as_pg "$PG_BIN/pg_ctl" start -D "$PGDATA" -l "$DATA/postgresql.log" -w -t 120 >/dev/null ||
            { tail -n 20 "$DATA/postgresql.log" >&2; die "PostgreSQL did not start (log above)"; }
        note "PostgreSQL listening on 127.0.0.1:$PG_PORT (data $PGDATA)"
    fi
    # The role and database `mlflow`, with the password kept in DIR (hex: safe in SQL and URIs).
    password_file=$DATA/mlflow-db-password
    if [[ ! -s $password_file ]]; then
        (umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$password_file")
    fi
    password=$(<"$password_file")
    as_pg "$PG_BIN/psql" -h "$DATA" -p "$PG_PORT" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 \
        >/dev/null <<EOF || die "could not create the role and database mlflow"
SELECT 'CREATE ROLE mlflow LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlflow')
\gexec
ALTER ROLE mlflow WITH LOGIN PASSWORD '$password';
SELECT 'CREATE DATABASE mlflow OWNER mlflow'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow')
\gexec
EOF
    DB_URI="postgresql+psycopg2://mlflow:$password@127.0.0.1:$PG_PORT/mlflow"
fi

# -- the tracking server ----------------------------------------------------------------------
# MLflow's server-side jobs (GenAI evaluation, prompt optimisation): fpzo_ray uses none.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
note "starting mlflow server on $HOST:$PORT (artifacts: $ARTIFACTS)"
MLFLOW_BACKEND_STORE_URI=$DB_URI setsid "$PYTHON" -m mlflow server \
    --host "$HOST" --port "$PORT" --workers 1 \
    --serve-artifacts --artifacts-destination "$ARTIFACTS" </dev/null &
MLFLOW_PID=$!

health_url="http://$(client_host):$PORT/health"
[[ $HOST == 0.0.0.0 ]] && health_url="http://127.0.0.1:$PORT/health"
healthy() {
    if command -v curl >/dev/null; then
        [[ $(curl -fsS --max-time 2 "$health_url" 2>/dev/null) == OK ]]
    else
        "$PYTHON" -c 'import sys, urllib.request as u
sys.exit(u.urlopen(sys.argv[1], timeout=2).read() != b"OK")' "$health_url" 2>/dev/null
    fi
}
# The first start against a new database creates MLflow's tables: allow a few minutes.
for ((i = 0; i < 600; i++)); do
    kill -0 "$MLFLOW_PID" 2>/dev/null || break
    healthy && break
    sleep 0.5
done
if ! kill -0 "$MLFLOW_PID" 2>/dev/null; then
    set +e; wait "$MLFLOW_PID"; rc=$?; set -e
    MLFLOW_PID=''
    die "mlflow server exited with status $rc before answering $health_url (its output is above)"
fi
healthy || die "mlflow server did not answer $health_url within 300 s"
echo "export MLFLOW_TRACKING_URI=http://$(client_host):$PORT"

set +e
wait "$MLFLOW_PID"
rc=$?
set -e
MLFLOW_PID=''
note "mlflow server exited with status $rc"
exit "$rc"
