#!/usr/bin/env bash
# FLEURS recipe: paired FLEURS speech + unpaired Wikipedia text + ASTRA consistency, then a
# fine-tuning on a target-language subset (docs/recipe_fleurs.md).
#
#   bash recipes/fleurs/run.sh [--langs L1,L2,...] [--finetune-langs L,...] [--gpus N] [--stage NAME]...
#
# Stages (each skips finished work, so re-running resumes; --stage runs one alone, repeatable):
#   check      astra data check of the chosen configs (hours, utterances, problems)
#   text       unpaired text per language: astra data text (wikimedia/wikipedia, streamed; FLEURS
#              dev/test sentences removed) -> WORK/text/{config}.txt
#   tokenizer  SentencePiece on the FLEURS train transcripts + the unpaired text
#   lm         per-language n-gram LMs: astra lm train (skipped when this checkout has no `astra lm`)
#   pretrain   FLEURS train of every language + unpaired text + ASTRA consistency (pretrain.yaml)
#   finetune   the --finetune-langs subset, from the pretrained model (finetune.yaml)
#   average    the last --average-last fine-tuning checkpoints -> WORK/averaged
#   evaluate   `test` per language, pooled and macro (CER for cmn yue ja th lo my km): the
#              pretrained model on --langs, the averaged fine-tuned model on --finetune-langs,
#              each with Aligner greedy and with CTC beam + LM (the languages with an LM; LM
#              weight and length bonus chosen on `validation` per model)
#   plot       attention maps + lattice occupancy of the first test utterance of the first target
#
# Arguments:
#   --langs CONFIGS        FLEURS configs (default en_us,fr_fr,ru_ru,hi_in,cmn_hans_cn: Latin,
#                          Cyrillic, Devanagari, Han); any of the 102 (recipes/fleurs/text_corpus.tsv)
#   --finetune-langs CONFIGS  fine-tuning subset (default hi_in)
#   --gpus N               0: no launcher (CPU or one device); 1, 8 or 16: accelerate launch with
#                          recipes/fleurs/accelerate/{1gpu,8gpu,2x8gpu}.yaml (16 = 2 nodes x 8: run the
#                          pretrain/finetune stages on every node with MACHINE_RANK and MAIN_PROCESS_IP set)
#   --fleurs-dir DIR       local copy of FLEURS (either layout, docs/data.md); default: the Hub
#   --text-corpus REPO     text corpus repo id (default wikimedia/wikipedia); --text-dump (20231101)
#   --text-files PATTERN   local copy of the text corpus: data_files pattern with {config}/{code}
#   --text-sentences N     sentences read per language (default 200000)
#   --vocab-size N         tokenizer vocabulary (default 4000)
#   --lm-order N           n-gram order of the lm stage (default 4)
#   --lm-weights W,...     CTC beam + LM's validation grid: LM weights (default 0.3,0.6,1.0) ...
#   --length-bonuses B,... ... and length bonuses (default 1,2,3), every pair tried
#   --average-last N       checkpoints averaged (default 5)
#   --set KEY=VALUE        extra `astra pretrain` and `finetune` setting (repeatable); --pretrain-set,
#                          --finetune-set: one of the two only
#   --work DIR             output folder (default exp/fleurs; or ASTRA_FLEURS_WORK)
# Timings: WORK/timings.tsv (stage, seconds).
set -euo pipefail

usage() { sed -n '2,42p' "$0" | sed 's/^# \{0,1\}//'; }

langs="en_us,fr_fr,ru_ru,hi_in,cmn_hans_cn"
ft_langs="hi_in"
gpus=0
fleurs_dir=""
text_corpus="wikimedia/wikipedia"
text_dump="20231101"
text_files=""
text_sentences=200000
vocab_size=4000
lm_order=4
lm_weights=0.3,0.6,1.0
length_bonuses=1,2,3
average_last=5
work="${ASTRA_FLEURS_WORK:-exp/fleurs}"
stages=()
both_set=()
pre_set=()
ft_set=()
need_value() { [ "$2" -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --langs) need_value "$1" $#; langs="$2"; shift ;;
        --finetune-langs) need_value "$1" $#; ft_langs="$2"; shift ;;
        --gpus) need_value "$1" $#; gpus="$2"; shift ;;
        --fleurs-dir) need_value "$1" $#; fleurs_dir="$2"; shift ;;
        --text-corpus) need_value "$1" $#; text_corpus="$2"; shift ;;
        --text-dump) need_value "$1" $#; text_dump="$2"; shift ;;
        --text-files) need_value "$1" $#; text_files="$2"; shift ;;
        --text-sentences) need_value "$1" $#; text_sentences="$2"; shift ;;
        --vocab-size) need_value "$1" $#; vocab_size="$2"; shift ;;
        --lm-order) need_value "$1" $#; lm_order="$2"; shift ;;
        --lm-weights) need_value "$1" $#; lm_weights="$2"; shift ;;
        --length-bonuses) need_value "$1" $#; length_bonuses="$2"; shift ;;
        --average-last) need_value "$1" $#; average_last="$2"; shift ;;
        --set) need_value "$1" $#; both_set+=("$2"); shift ;;
        --pretrain-set) need_value "$1" $#; pre_set+=("$2"); shift ;;
        --finetune-set) need_value "$1" $#; ft_set+=("$2"); shift ;;
        --stage) need_value "$1" $#; stages+=("$2"); shift ;;
        --work) need_value "$1" $#; work="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

recipe_name=fleurs
# shellcheck source=recipes/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # repo root, PY, say, need, timed, validation_choice
recipe=recipes/fleurs
ASTRA=("$PY" -m astra)

all_stages=(check text tokenizer lm pretrain finetune average evaluate plot)
if [ ${#stages[@]} -eq 0 ]; then
    stages=("${all_stages[@]}")
else
    for s in "${stages[@]}"; do
        case " ${all_stages[*]} " in
            *" $s "*) ;;
            *) echo "run.sh: unknown stage '$s' (${all_stages[*]})" >&2; exit 2 ;;
        esac
    done
fi
case "$gpus" in
    0) launch=("$PY" -m astra) ;;
    1) launch=("$PY" -m accelerate.commands.launch --config_file $recipe/accelerate/1gpu.yaml -m astra) ;;
    8) launch=("$PY" -m accelerate.commands.launch --config_file $recipe/accelerate/8gpu.yaml -m astra) ;;
    16) [ -n "${MAIN_PROCESS_IP:-}" ] || { echo "run.sh: --gpus 16 needs MAIN_PROCESS_IP (and MACHINE_RANK per node)" >&2; exit 2; }
        launch=("$PY" -m accelerate.commands.launch --config_file $recipe/accelerate/2x8gpu.yaml
                --machine_rank "${MACHINE_RANK:-0}" --main_process_ip "$MAIN_PROCESS_IP"
                --main_process_port "${MAIN_PROCESS_PORT:-29500}" -m astra) ;;
    *) echo "run.sh: --gpus must be 0, 1, 8 or 16 (recipes/fleurs/accelerate/), got '$gpus'" >&2; exit 2 ;;
esac

IFS=, read -r -a lang_list <<< "$langs"
IFS=, read -r -a ft_list <<< "$ft_langs"
fleurs_args=()
[ -n "$fleurs_dir" ] && fleurs_args=(--fleurs-dir "$fleurs_dir")
tokenizer="$work/tokenizer.model"
mkdir -p "$work"
timings="$work/timings.tsv"

yaml_list() { local IFS=,; echo "[$*]"; }
text_sources() {  # LANG=PATH of every language with a text file (some have no corpus edition)
    local lang
    for lang in "$@"; do [ -f "$work/text/$lang.txt" ] && echo "$lang=$work/text/$lang.txt"; done; true
}

# ---- stages -------------------------------------------------------------------------------
stage_check() {
    local out="$work/check.txt"
    if [ -f "$out" ]; then say "check: $out exists (skipped)"; return; fi
    say "check $langs -> $out"
    "${ASTRA[@]}" data check --fleurs "$langs" "${fleurs_args[@]}" > "$out.tmp"
    mv "$out.tmp" "$out"
    tail -n 3 "$out" >&2
}

stage_text() {
    local todo=() lang
    for lang in "${lang_list[@]}"; do [ -f "$work/text/$lang.txt" ] || todo+=("$lang"); done
    if [ ${#todo[@]} -eq 0 ]; then say "text: $work/text has every language (skipped)"; return; fi
    local args=(--fleurs "$(IFS=,; echo "${todo[*]}")" "${fleurs_args[@]}" --corpus "$text_corpus"
                --dump "$text_dump" --max-sentences "$text_sentences" --out "$work/text")
    [ -n "$text_files" ] && args+=(--corpus-files "$text_files")
    say "text ${todo[*]} ($text_corpus) -> $work/text"
    "${ASTRA[@]}" data text "${args[@]}"
}

stage_tokenizer() {
    if [ -f "$tokenizer" ]; then say "tokenizer: $tokenizer exists (skipped)"; return; fi
    local args=() src
    while read -r src; do [ -n "$src" ] && args+=(--text "$src"); done < <(text_sources "${lang_list[@]}")
    say "tokenizer -> $tokenizer"
    "${ASTRA[@]}" tokenizer train --fleurs "$langs" "${fleurs_args[@]}" "${args[@]}" \
        --vocab-size "$vocab_size" --character-coverage 0.9995 --out "$work/tokenizer-partial.model"
    mv "$work/tokenizer-partial.model" "$tokenizer"; rm -f "$work/tokenizer-partial.vocab"
}

stage_lm() {
    need "$tokenizer" tokenizer
    if [ -f "$work/lm/DONE" ]; then say "lm: $work/lm is finished (skipped)"; return; fi
    local args=() src
    while read -r src; do [ -n "$src" ] && args+=(--text "$src"); done < <(text_sources "${lang_list[@]}")
    [ ${#args[@]} -gt 0 ] || { say "lm: no unpaired text (skipped)"; return; }
    say "lm (order $lm_order) -> $work/lm"
    "${ASTRA[@]}" lm train --tokenizer "$tokenizer" "${args[@]}" --order "$lm_order" --out "$work/lm"
    touch "$work/lm/DONE"
}

train_run() {  # train_run KIND OUT CONFIG LANGS INIT -- extra --set values
    local kind="$1" out="$2" config="$3" run_langs="$4" init="$5"
    shift 5
    if [ -f "$out/DONE" ]; then say "$kind: $out is finished (skipped)"; return; fi
    say "$kind ($run_langs) -> $out"
    IFS=, read -r -a run_list <<< "$run_langs"
    local sources
    sources="$(yaml_list $(text_sources "${run_list[@]}"))"
    local kv settings=(data.fleurs="[$run_langs]" data.tokenizer="$tokenizer" data.unpaired_text="$sources")
    [ -n "$fleurs_dir" ] && settings+=(data.fleurs_dir="$fleurs_dir")
    local args=(--config "$config" --out-dir "$out" --resume)
    [ -n "$init" ] && args+=(--init "$init")
    for kv in "${settings[@]}" "$@"; do args+=(--set "$kv"); done
    "${launch[@]}" "$kind" "${args[@]}"
    touch "$out/DONE"
}

stage_pretrain() {
    need "$tokenizer" tokenizer
    train_run pretrain "$work/pretrain" $recipe/pretrain.yaml "$langs" "" "${both_set[@]}" "${pre_set[@]}"
}

stage_finetune() {
    need "$work/pretrain/DONE" pretrain
    train_run finetune "$work/finetune" $recipe/finetune.yaml "$ft_langs" "$work/pretrain" \
        "${both_set[@]}" "${ft_set[@]}"
}

stage_average() {
    need "$work/finetune/DONE" finetune
    if [ -f "$work/averaged/model.safetensors" ]; then say "average: $work/averaged exists (skipped)"; return; fi
    say "average the last $average_last fine-tuning checkpoints -> $work/averaged"
    "${ASTRA[@]}" average --run "$work/finetune" --last "$average_last" --out "$work/averaged"
}

evaluate_run() {  # evaluate_run CHECKPOINT OUT CONFIG...: Aligner greedy -> OUT, CTC beam + LM -> OUT_ctc_lm
    local ckpt="$1" out="$2"; shift 2
    if [ -f "$out/results.json" ]; then
        say "evaluate: $out/results.json exists (skipped)"
    else
        say "evaluate $ckpt on test ($*, Aligner greedy) -> $out"
        "${ASTRA[@]}" evaluate --checkpoint "$ckpt" --fleurs "$@" "${fleurs_args[@]}" --split test \
            --output-dir "$out" --no-progress > /dev/null
    fi
    local with_lm=() lang
    for lang in "$@"; do [ -f "$work/text/$lang.txt" ] && with_lm+=("$lang"); done
    if [ ! -f "$work/lm/DONE" ] || [ ${#with_lm[@]} -eq 0 ]; then
        say "evaluate: no LM for $* (CTC beam + LM skipped)"; return
    fi
    local lm_out="${out}_ctc_lm" sweep="${out}_ctc_lm_sweep_validation" choice weight bonus
    if [ -f "$lm_out/results.json" ]; then say "evaluate: $lm_out/results.json exists (skipped)"; return; fi
    local lm_args=(--checkpoint "$ckpt" --fleurs "${with_lm[@]}" "${fleurs_args[@]}" --method ctc_beam --beam 16
                   --lm "$work/lm" --no-progress)
    choice="$(validation_choice "$sweep" \
        "LM sweep on validation (${with_lm[*]}; LM weights $lm_weights, length bonuses $length_bonuses)" \
        "${ASTRA[@]}" evaluate "${lm_args[@]}" --split validation --lm-weight "$lm_weights" \
        --length-bonus "$length_bonuses")"
    read -r weight bonus <<< "$choice"
    say "evaluate $ckpt on test (${with_lm[*]}, CTC beam + LM, weight $weight, bonus $bonus) -> $lm_out"
    "${ASTRA[@]}" evaluate "${lm_args[@]}" --split test --lm-weight "$weight" --length-bonus "$bonus" \
        --output-dir "$lm_out" > /dev/null
}

stage_evaluate() {
    need "$work/averaged/model.safetensors" average
    evaluate_run "$work/pretrain" "$work/eval/pretrain" "${lang_list[@]}"
    evaluate_run "$work/averaged" "$work/eval/finetune" "${ft_list[@]}"
    local results
    for results in "$work"/eval/{pretrain,finetune}{,_ctc_lm}/results.json; do
        [ -f "$results" ] || continue
        "$PY" - "$results" >&2 <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[1]}: {r['meta']['method']}, pooled {100 * r['pooled']['error_rate']:.1f} %,",
      f"macro {100 * r['macro']['error_rate']:.1f} %")
EOF
    done
}

stage_plot() {
    need "$work/averaged/model.safetensors" average
    local out="$work/plots" lang="${ft_list[0]}"
    if [ -f "$out/attention.png" ]; then say "plot: $out/attention.png exists (skipped)"; return; fi
    # the first test utterance of the first target language, as a wav file
    "${ASTRA[@]}" data export --fleurs "$lang" "${fleurs_args[@]}" --split test --limit 1 --out "$work/plot_audio" > /dev/null
    local row audio text
    row="$(sed -n 2p "$work/plot_audio/$lang/test.tsv")"
    audio="$work/plot_audio/$lang/$(cut -f2 <<< "$row")"
    text="$(cut -f3 <<< "$row")"
    say "plot-attention ($audio: \"$text\") -> $out"
    "${ASTRA[@]}" plot-attention --checkpoint "$work/averaged" --text "$text" --language "$lang" \
        --output-dir "$out" "$audio"
}

# ---- run ----------------------------------------------------------------------------------
t0=$(date +%s)
n=0
for s in "${stages[@]}"; do
    n=$((n + 1))
    say "stage $n/${#stages[@]}: $s"
    timed "$s" "stage_$s"
done
total=$(( $(date +%s) - t0 ))
say "done in ${total}s: stages ${stages[*]} (per-stage seconds appended to $timings)"
ran() { case " ${stages[*]} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if ran evaluate; then
    echo; echo "Pretrained model, FLEURS test:"; cat "$work/eval/pretrain/results.md"
    echo; echo "Fine-tuned + averaged model, FLEURS test:"; cat "$work/eval/finetune/results.md"
fi
exit 0
