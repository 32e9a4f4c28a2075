# Sourced by the CI steps that talk to a running local stack.
#
# start_local_stack LOG starts target/debug/local-stack in memory with every
# port 0 (free ports chosen by the kernel), waits, with a deadline, for its
# banner, and sets COMMAND_ADDR, QUERY_ADDR, PROJECTOR_ADDR, ADMIN_ADDR,
# PROCESS_MANAGER_ADDR and STACK_PID. The README's fixed ports lie inside Linux's ephemeral range, so
# on a busy machine a client socket of another process can hold one of them
# for as long as its connection lives; CI must not depend on that.
# check_readme_ports verifies that the README's addresses are the stack's
# defaults, so a walkthrough rewritten onto the chosen ports is the README's.

start_local_stack() {
  local log=$1 stack=target/debug/local-stack
  [ -x "$stack" ] || cargo build --locked -p local-stack
  "$stack" --in-memory --command-port 0 --query-port 0 --projector-health-port 0 \
    --admin-port 0 --process-manager-health-port 0 --metrics-port 0 --dynamodb-port 0 \
    >"$log" 2>&1 &
  STACK_PID=$!
  local _
  for _ in $(seq 1 300); do
    grep -q "dynabridge local stack is up" "$log" && grep -q "admin service" "$log" && break
    kill -0 "$STACK_PID" 2>/dev/null || { cat "$log"; echo "the local stack exited at start"; return 1; }
    sleep 0.1
  done
  grep -q "dynabridge local stack is up" "$log" || { cat "$log"; echo "the local stack did not start within 30 s"; return 1; }
  COMMAND_ADDR=$(stack_addr "$log" "command service")
  QUERY_ADDR=$(stack_addr "$log" "query service")
  PROJECTOR_ADDR=$(stack_addr "$log" "projector health")
  ADMIN_ADDR=$(stack_addr "$log" "admin service")
  PROCESS_MANAGER_ADDR=$(stack_addr "$log" "process manager")
  export COMMAND_ADDR QUERY_ADDR PROJECTOR_ADDR ADMIN_ADDR PROCESS_MANAGER_ADDR STACK_PID
}

# The address after a banner label, e.g. "  command service    127.0.0.1:41235".
stack_addr() {
  grep -m1 "^  $2 " "$1" | awk '{print $NF}'
}

stop_local_stack() {
  if [ -n "${STACK_PID:-}" ]; then
    kill -TERM "$STACK_PID" 2>/dev/null || true
    wait "$STACK_PID" 2>/dev/null || true
  fi
}

# The README's addresses for the services are the local stack's defaults.
check_readme_ports() {
  local help pair flag port
  help=$(target/debug/local-stack --help)
  for pair in command-port:50051 query-port:50052 projector-health-port:50053 admin-port:50054 \
    process-manager-health-port:50055; do
    flag=${pair%%:*}
    port=${pair##*:}
    # The flag's own help, up to the next flag.
    echo "$help" | awk -v f="--$flag " 'index($0, f){on=1; next} on && /^ +-/{exit} on' \
      | grep -q "default: $port\]" \
      || { echo "local-stack's --$flag default is not $port, the README's"; return 1; }
  done
}

# Rewrites the README's fixed addresses in a script onto the running stack's.
onto_stack_ports() {
  sed -e "s/127\.0\.0\.1:50051/$COMMAND_ADDR/g" \
      -e "s/127\.0\.0\.1:50052/$QUERY_ADDR/g" \
      -e "s/127\.0\.0\.1:50053/$PROJECTOR_ADDR/g" \
      -e "s/127\.0\.0\.1:50054/$ADMIN_ADDR/g" \
      -e "s/127\.0\.0\.1:50055/$PROCESS_MANAGER_ADDR/g" "$@"
}
