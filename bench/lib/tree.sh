# shellcheck shell=bash
# Shared by the bench scripts: a benchmark tree copied from /usr. Needs a `log` function.

# The /usr directories a benchmark tree is taken from (one spec entry each in split specs).
USR_TREE_DIRS=()
for _d in /usr/bin "/usr/lib/$(uname -m)-linux-gnu" /usr/share /usr/include; do
    if [[ -d $_d ]]; then USR_TREE_DIRS+=("$_d"); fi
done
unset _d

# make_usr_tree DIR MB: a mix of big binaries and libraries and many small files, the same
# share of MB from each candidate directory, taking its children in name order while they fit.
# Built in DIR.tmp and renamed, so an interrupted run never leaves a half tree at DIR.
make_usr_tree() {
    local tree=$1 mb=$2
    log "making a ~$mb MB tree under $tree from ${USR_TREE_DIRS[*]}"
    local budget=$((mb * 1000000 / ${#USR_TREE_DIRS[@]}))
    rm -rf "$tree" "$tree.tmp"
    mkdir -p "$tree.tmp"
    local dir size path taken
    for dir in "${USR_TREE_DIRS[@]}"; do
        taken=0
        mkdir -p "$tree.tmp$dir"
        while IFS=$'\t' read -r size path; do
            ((taken + size <= budget)) || continue
            cp -a --parents "$path" "$tree.tmp/"
            taken=$((taken + size))
        done < <(du -s --apparent-size --block-size=1 -- "$dir"/* 2>/dev/null | LC_ALL=C sort -t$'\t' -k2)
        log "  $dir: $((taken / 1000000)) MB"
    done
    mv "$tree.tmp" "$tree"
}
