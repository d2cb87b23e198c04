# Shared by the recipes (sourced): the wsteer entry point, the embedded model's name, and `one GLOB`, which prints the
# single path matching GLOB or stops with a clear error (a recipe never guesses between two dW folders).
W=.venv/bin/wsteer
M=smollm2-135m-instruct
one() {
  local found=($1)
  if [ ${#found[@]} -ne 1 ] || [ ! -e "${found[0]}" ]; then
    echo "expected exactly one match for $1, found: ${found[*]}" >&2
    exit 1
  fi
  echo "${found[0]}"
}
