# Shared by bench/extend_labels.sh and bench/extend_isotherms.sh (sourced, not run).

# nice_autogroup PID NICENESS: with the kernel's autogroup scheduling (most desktop/VM kernels) nice ranks processes
# only inside their session, so a run started with setsid would get a fair share of the cores beside the user's own
# work. Nice its autogroup too, once PID leads its own session (never the caller's group); waits up to 2 s for that.
nice_autogroup() {
  local pid=$1 niceness=$2
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    if [[ "$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ')" == "$pid" ]]; then
      [[ -w /proc/$pid/autogroup ]] && echo "$niceness" >"/proc/$pid/autogroup" 2>/dev/null || true
      return 0
    fi
    sleep 0.2
  done
}
