#!/usr/bin/env bash
# Evaluate an open-domain recognizer on every test split of its model card, then write the card.
#
#   scripts/evaluate_open_asr.sh MODEL RESULTS_DIR
#
# MODEL is a package folder (or shipped name), or a `suite train` run folder: then its newest
# checkpoint (EMA weights) is exported to RESULTS_DIR/package first. A package without an LM gets
# the open-text LM attached (RESULTS_DIR/package-lm) and its LM weight and length bonus tuned on
# the synthetic dev split (never on test). Then, each a `suite evaluate --json` file in
# RESULTS_DIR (the names python -m suite.tasks.asr.card reads):
#   open_test{,_greedy,_streaming}.json  synthetic test split: seen voices, held-out espeak-ng
#                                         voices, held-out engine (SVOX Pico), one run each for
#                                         the default decoding, greedy, and streaming
#   real_test{,_greedy,_streaming}.json  recorded test speech, per source and pooled
#   real_test_pocketsphinx.json          PocketSphinx on the same recorded cuts
# and RESULTS_DIR/README.md, the model card filled from them.
#
# Environment: PER_SOURCE=N scores a seeded sample of N cuts per source (a synthetic split is
# one source) instead of whole splits; LM (default runs/open_text_lm/model), DEV, OPEN_TEST,
# REAL_TEST (the manifests), NAME (the card's title), NICE (default 10).
set -euo pipefail

if [ $# -ne 2 ]; then
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
MODEL=$1
OUT=$2
LM=${LM:-runs/open_text_lm/model}
DEV=${DEV:-data/open/synth_cuts_dev.jsonl.gz}
OPEN_TEST=${OPEN_TEST:-data/open/synth_cuts_test.jsonl.gz}
REAL_TEST=${REAL_TEST:-data/real/real_cuts_test.jsonl.gz}
NAME=${NAME:-}
PER_SOURCE=${PER_SOURCE:-}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$HERE/.venv/bin/python}
RUN="nice -n ${NICE:-10}"
SUITE="$RUN $PY -m suite.cli"
SAMPLE=()
[ -n "$PER_SOURCE" ] && SAMPLE=(--per-source "$PER_SOURCE")
mkdir -p "$OUT"

step() { echo "== $*" >&2; }

if [ -d "$MODEL/checkpoints" ]; then
    step "exporting the newest checkpoint of $MODEL"
    $RUN "$PY" -m suite.tasks.asr.checkpoint_package "$MODEL" "$OUT/package" >/dev/null
    MODEL=$OUT/package
fi

has_lm=$("$PY" -c 'import sys, yaml
from suite.model import resolve
heads = yaml.safe_load((resolve(sys.argv[1]) / "config.yaml").read_text())["model"]["heads"]
print(int(any(h.get("lm") for h in heads.values() if h.get("name") == "ctc")))' "$MODEL")
if [ "$has_lm" = 0 ] && [ -d "$LM" ]; then
    step "attaching the LM $LM and tuning it on $DEV"
    if $SUITE models attach-lm "$MODEL" "$LM" --out "$OUT/package-lm" >/dev/null; then
        MODEL=$OUT/package-lm
        $SUITE evaluate "$MODEL" "$DEV" --tune-lm --write "${SAMPLE[@]}" | tee "$OUT/dev_lm_tuning.txt"
    else  # e.g. another vocabulary: the error above says why
        step "no LM: evaluating $MODEL as it is (its WER (LM) column is its own decoding)"
    fi
fi

evaluate() {  # evaluate KEY MANIFEST [options]: RESULTS_DIR/KEY.json
    local key=$1 manifest=$2
    shift 2
    step "$key: suite evaluate $MODEL $manifest $*"
    $SUITE evaluate "$MODEL" "$manifest" --json --results "$OUT/$key.results.jsonl" \
        "${SAMPLE[@]}" "$@" >"$OUT/$key.json" || [ $? = 1 ]  # 1: some cuts unreadable, listed
}

evaluate open_test "$OPEN_TEST"
evaluate open_test_greedy "$OPEN_TEST" --decoding greedy
evaluate open_test_streaming "$OPEN_TEST" --streaming
if [ -f "$REAL_TEST" ]; then
    evaluate real_test "$REAL_TEST"
    evaluate real_test_greedy "$REAL_TEST" --decoding greedy
    evaluate real_test_streaming "$REAL_TEST" --streaming
    if "$PY" -c 'import pocketsphinx' 2>/dev/null; then
        step "real_test_pocketsphinx: python -m suite.tasks.asr.peers $REAL_TEST"
        $RUN "$PY" -m suite.tasks.asr.peers "$REAL_TEST" --json "${SAMPLE[@]}" \
            --results "$OUT/real_test_pocketsphinx.results.jsonl" >"$OUT/real_test_pocketsphinx.json"
    else
        step "no PocketSphinx (pip install pocketsphinx): its column stays empty"
    fi
fi

step "model card: $OUT/README.md"
$RUN "$PY" -m suite.tasks.asr.card "$MODEL" "$OUT" ${NAME:+--name "$NAME"} >"$OUT/README.md"
sed -n '/^| test split/,/^$/p' "$OUT/README.md"  # the card's results table
