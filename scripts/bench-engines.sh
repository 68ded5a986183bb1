# shellcheck shell=bash
# Sourced by scripts/bench-backup.sh (its tree, $out, measure, fresh_fs,
# churn and unchurn): restic and Borg repositories against lifeboat's
# native format on the same work.
#
# Five contenders back up the same tree seven times, one after the other
# in each round so that every one sees the same tree: generation 1 is the
# first backup, generation 2 the same tree unchanged, generations 3 to 7
# each after a change (churn: 2% of the small files rewritten, 4 MB
# appended to the 200 MB log). Then each restores its seventh generation
# into a fresh ext4.
#   native      lifeboat backup create --incremental into a folder
#   restic      restic alone (backup --one-file-system ., restore latest)
#   lb-restic   lifeboat backup create --to restic:REPO (restic, plus the
#               walk, the SHA-256 manifest and the metadata snapshot; the
#               restore checks every file against the manifest)
#   borg        borg alone (create --one-file-system --numeric-ids, extract)
#   lb-borg     lifeboat backup create --to borg:REPO
# Both engines encrypt (restic always; Borg repokey, lz4, its defaults);
# the native rows are in clear (see the age rows above for its cost).

eng=$out/engines
mkdir -p "$eng"
printf 'bench-%s\n' "$$" >"$eng/password"
export RESTIC_PASSWORD_FILE=$eng/password
BORG_PASSPHRASE=$(cat "$eng/password")
export BORG_PASSPHRASE BORG_DISPLAY_PASSPHRASE=no BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
# The engines' caches (chunk index, files cache) and Borg's security
# records in folders made for the run.
export RESTIC_CACHE_DIR=$eng/cache/restic BORG_CACHE_DIR=$eng/cache/borg BORG_CONFIG_DIR=$eng/borg-config
export lifeboat eng tree out
restic init --quiet -r "$eng/restic" >/dev/null
restic init --quiet -r "$eng/lb-restic" >/dev/null
borg init --encryption repokey "$eng/borg" 2>/dev/null
borg init --encryption repokey "$eng/lb-borg" 2>/dev/null

quiet() { "$@" >/dev/null; }
backup_native() { quiet "$lifeboat" backup create --quiet --incremental --to "$eng/native" --source "$tree"; }
backup_restic() { (cd "$tree" && quiet restic -r "$eng/restic" backup --quiet --one-file-system --host bench .); }
backup_lb-restic() { quiet "$lifeboat" backup create --quiet --to "restic:$eng/lb-restic" --source "$tree"; }
backup_borg() { (cd "$tree" && borg create --one-file-system --numeric-ids "$eng/borg::g$1" .); }
backup_lb-borg() { quiet "$lifeboat" backup create --quiet --to "borg:$eng/lb-borg" --source "$tree"; }
restore_native() { quiet "$lifeboat" backup restore --quiet --from "$eng/native" --to "$out/r"; }
restore_restic() { quiet restic -r "$eng/restic" restore --quiet latest --target "$out/r"; }
restore_lb-restic() { quiet "$lifeboat" backup restore --quiet --from "restic:$eng/lb-restic" --to "$out/r"; }
restore_borg() { (cd "$out/r" && borg extract --numeric-ids "$eng/borg::g7"); }
restore_lb-borg() { quiet "$lifeboat" backup restore --quiet --from "borg:$eng/lb-borg" --to "$out/r"; }
# (measure runs a program: bash with these functions)
export -f quiet backup_native backup_restic backup_lb-restic backup_borg backup_lb-borg \
    restore_native restore_restic restore_lb-restic restore_borg restore_lb-borg

echo
echo "== restic and Borg repositories against the native format: 7 generations, 5 of them after a change"
kinds=(native restic lb-restic borg lb-borg)
for round in 1 2 3 4 5 6 7; do
    if [ "$round" -ge 3 ]; then churn "$round"; fi
    for k in "${kinds[@]}"; do
        measure "$k-g$round" bash -c "backup_$k $round"
        if [ "$round" = 2 ] || [ "$round" = 7 ]; then
            size[$k-g$round]=$(du -sb "$eng/$k" | awk '{print $1}')
        fi
    done
done
for k in "${kinds[@]}"; do
    fresh_fs
    measure "$k-restore" bash -c "restore_$k"
done
cleanup
unchurn

mean5() { # name prefix, array (secs or cpu): the mean of generations 3-7
    local -n a=$2
    echo "(${a[$1-g3]} + ${a[$1-g4]} + ${a[$1-g5]} + ${a[$1-g6]} + ${a[$1-g7]}) / 5" | bc -l
}
printf '%-10s %15s %15s %15s %8s %8s %15s\n' "" "first s (CPU)" "unchanged (CPU)" "changed (CPU)" \
    "MB at 2" "MB at 7" "restore (CPU)"
for k in "${kinds[@]}"; do
    printf '%-10s %7.1f (%5.1f) %7.1f (%5.1f) %7.1f (%5.1f) %8.1f %8.1f %7.1f (%5.1f)\n' "$k" \
        "${secs[$k-g1]}" "${cpu[$k-g1]}" "${secs[$k-g2]}" "${cpu[$k-g2]}" \
        "$(mean5 "$k" secs)" "$(mean5 "$k" cpu)" \
        "$(echo "${size[$k-g2]} / 1000000" | bc -l)" "$(echo "${size[$k-g7]} / 1000000" | bc -l)" \
        "${secs[$k-restore]}" "${cpu[$k-restore]}"
done
echo "(changed s: the mean of generations 3-7; restore: generation 7 into a fresh ext4, with sync)"
echo "($(restic version | cut -d' ' -f1-2); $(borg --version))"
