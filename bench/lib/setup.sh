# Shared set-up of the bench scripts (sourced; the script defines `log` and `die`).

# install_missing TOOL=PACKAGE...: installs with apt-get the packages of the tools that are
# not on PATH (through sudo when not root).
install_missing() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
    done
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    local sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get install -y "${missing[@]}" >&2 ||
        die "cannot install ${missing[*]}; install them and run again"
}

# build_strata: builds the working tree's release binary and sets STRATA to it.
build_strata() {
    log "cargo build --release -p strata"
    cargo build --release -p strata >&2
    local target_dir
    target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
    STRATA=$target_dir/release/strata
    [[ -x $STRATA ]] || die "no strata binary at $STRATA"
}
