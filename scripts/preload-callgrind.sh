# Sourced by scripts/check-fast-paths.sh and scripts/check-hot-text.sh, which both measure
# libtally.so under callgrind: the tools they need, the library to check, and one program run
# under callgrind with the library preloaded. Each function takes the caller's name for its
# messages first. Not a command of its own.

# need_tools NAME TOOL...: exits 2 with one line if any TOOL is missing.
need_tools() {
    local name=$1 tool missing=()
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        echo "$name: missing tools: ${missing[*]} (apt-get install -y valgrind binutils build-essential python3)" >&2
        exit 2
    fi
}

# library NAME [PATH]: prints the real path of PATH, or of target/release/libtally.so after
# building it when PATH is empty; exits 2 with one line if there is no such file.
library() {
    local name=$1 lib=${2:-}
    if [[ -z "$lib" ]]; then
        cargo build --release -p tally-alloc >&2
        lib=target/release/libtally.so
    fi
    [[ -f "$lib" ]] || { echo "$name: no library at $lib" >&2; exit 2; }
    realpath "$lib"
}

# callgrind_profile NAME OUT COMMAND...: runs COMMAND under callgrind (instruction addresses,
# no lines) with no TALLY_CONF or MALLOC_CONF, the profile in OUT; exits 2 showing valgrind's
# log if the run fails.
callgrind_profile() {
    local name=$1 out=$2
    shift 2
    if ! env -u TALLY_CONF -u MALLOC_CONF \
        valgrind --tool=callgrind --dump-instr=yes --dump-line=no --callgrind-out-file="$out" \
        "$@" >"$out.log" 2>&1; then
        cat "$out.log" >&2
        echo "$name: $1 failed under valgrind (log above)" >&2
        exit 2
    fi
}

# preloaded_callgrind NAME LIB OUT COMMAND...: callgrind_profile with LIB preloaded.
preloaded_callgrind() {
    local name=$1 lib=$2 out=$3
    shift 3
    LD_PRELOAD="$lib" callgrind_profile "$name" "$out" "$@"
}
