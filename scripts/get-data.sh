#!/usr/bin/env bash
# Put the paper's data in data/ (released layout: edited-data/zsre.json, task-data/...).
# Clones the authors' repository at a pinned commit when the network allows.
set -euo pipefail
REPO=https://github.com/JasonForJoy/Model-Editing-Hurt
COMMIT=c7d51c45b786a8f61f2801aa23554f2c371bf04a
DEST=${1:-data}

if [ -f "$DEST/edited-data/zsre.json" ] && [ -d "$DEST/task-data" ]; then
  echo "data: $DEST already holds the released layout"; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if ! GIT_TERMINAL_PROMPT=0 timeout 300 git clone --quiet --no-checkout "$REPO" "$tmp/repo" 2>/dev/null \
   || ! git -C "$tmp/repo" checkout --quiet "$COMMIT" -- edited-data task-data 2>/dev/null; then
  cat >&2 <<MSG
data: could not clone $REPO (no network?).
Put the paper's data in $DEST/ by hand, in the released layout:
  $DEST/edited-data/zsre.json     (ZsRE edits; the repository's edited-data/zsre_mend_eval_portability_gpt4.json)
  $DEST/task-data/...             (test-reasoning.jsonl, test-NLI.tsv, ..., test-dialogue/dev_*.txt)
or point EDITHURT_DATA at a folder that holds them (make test and make reproduce also find ../shared/data/edithurt).
MSG
  exit 1
fi
mkdir -p "$DEST/edited-data"
cp -r "$tmp/repo/task-data" "$DEST/"
src="$tmp/repo/edited-data/zsre.json"
[ -f "$src" ] || src="$tmp/repo/edited-data/zsre_mend_eval_portability_gpt4.json"
cp "$src" "$DEST/edited-data/zsre.json"
echo "data: $DEST filled from $REPO@$COMMIT"
