# Shared by etcd-lib.sh and pg-lib.sh (sourced, not run): installing missing Debian packages,
# picking free loopback ports, and cleanups that run at exit, however many servers a script
# starts.

# Sourced twice (by both libs), it would forget the cleanups already registered.
[ -z "${common_lib_sourced:-}" ] || return 0
common_lib_sourced=1

# install_packages WHO PACKAGE...: apt-get installs the packages (as root), or says what is
# missing and exits 2.
install_packages() {
  local who=$1
  shift
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "$who: installing $*" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "$who: missing $*: install them (Debian: sudo apt-get install -y $*) and run again" >&2
    exit 2
  fi
}

# A free loopback port: bind to port 0 and read what the kernel picked.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000))
}

# at_exit COMMAND: runs COMMAND (a function name, or a line to eval) when the script exits,
# also by INT or TERM (then with status 130 or 143), before the commands registered earlier
# (last in, first out). A command registered twice runs once. One trap serves them all, so
# starting etcd and PostgreSQL stops both.
at_exit_commands=()
at_exit() {
  local c
  for c in ${at_exit_commands[@]+"${at_exit_commands[@]}"}; do
    [ "$c" != "$1" ] || return 0
  done
  at_exit_commands+=("$1")
  trap run_at_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# Runs the registered commands (each even when another fails), once; keeps the exit status.
run_at_exit() {
  local status=$? i
  for ((i = ${#at_exit_commands[@]} - 1; i >= 0; i--)); do
    eval "${at_exit_commands[i]}" || true
  done
  at_exit_commands=()
  return "$status"
}

# alive PID: whether the process runs (a zombie, exited but not yet waited for, does not).
alive() {
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
