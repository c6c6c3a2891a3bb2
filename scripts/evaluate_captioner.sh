#!/usr/bin/env bash
# Evaluate an image captioner of composed scenes on its test and dev splits, then write its card.
#
#   scripts/evaluate_captioner.sh PACKAGE RESULTS_DIR [RECIPE_COMMAND ...]
#
# Writes, each a `suite evaluate --json` file in RESULTS_DIR (the names
# python -m suite.tasks.caption.card reads):
#   test_beam.json    test split (every scene shows a held-out composition), beam search
#   test_greedy.json  the same, greedy
#   dev_greedy.json   dev split (seen compositions, unseen object images), greedy
# with each scene's caption and missing facts beside them (*.results.jsonl), and
# RESULTS_DIR/README.md, the model card; each RECIPE_COMMAND is a line of its "Training" section.
#
# Environment: SCENES (default data/scenes), NAME (the card's title, default
# default-captioner), BEAM (default 4), NICE (default 10).
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
MODEL=$1
OUT=$2
shift 2
SCENES=${SCENES:-data/scenes}
NAME=${NAME:-default-captioner}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$HERE/.venv/bin/python}
SUITE="nice -n ${NICE:-10} $PY -m suite.cli"
mkdir -p "$OUT"

evaluate() {  # evaluate KEY SPLIT [options]: RESULTS_DIR/KEY.json
    local key=$1 split=$2
    shift 2
    echo "== $key: suite evaluate $MODEL $SCENES/$split.jsonl $*" >&2
    $SUITE evaluate "$MODEL" "$SCENES/$split.jsonl" --json --results "$OUT/$key.results.jsonl" \
        "$@" >"$OUT/$key.json"
}

evaluate test_beam test --decoding beam --beam-size "${BEAM:-4}"
evaluate test_greedy test --decoding greedy
evaluate dev_greedy dev --decoding greedy

RECIPES=()
for line in "$@"; do RECIPES+=(--recipe "$line"); done
"$PY" -m suite.tasks.caption.card "$MODEL" "$OUT" --name "$NAME" "${RECIPES[@]}" >"$OUT/README.md"
echo "card: $OUT/README.md" >&2
