#!/usr/bin/env bash
# The tiny embedded multilingual recipe (README's first command: `make demo`).
#
#   bash recipes/tiny/run.sh [--quick] [--compare] [--rescore] [--stage NAME]... [--work DIR]
#
# Stages (each skips work already done, so re-running resumes; --stage runs one alone):
#   corpus     synthesise the corpus: Debian fortunes sentences in 5 languages, Latin + Cyrillic
#              (tools/build_tiny_corpus.py; needs the fortunes* packages)
#   tokenizer  SentencePiece on the paired training transcripts
#   lm         n-gram LM per language (modified Kneser-Ney over the tokenizer's pieces) on the
#              same unpaired text the text-injected model trains on (`astra lm train`)
#   pretrain   paired speech (split `pretrain`) + unpaired text + ASTRA consistency
#   finetune   low-resource target corpus (split `train`) + unpaired text
#   evaluate   on `test` (unseen voices): Aligner greedy, Aligner + CTC beam search
#              (aligner_ctc_beam), CTC greedy, and the two beams with LM shallow fusion (LM
#              weight + length bonus chosen on validation, per model); with --rescore also
#              CTC beam + LM with the Aligner rescoring its n-best (ctc_beam_rescore; CTC
#              weight chosen on validation; ~2 min per model): WER, CER per language, pooled,
#              macro, and the error rates on the text-only and unseen words
#   plot       attention maps + lattice occupancy PNG of one test utterance
#   compare    (--compare) the same model paired-only (no unpaired text, no ASTRA),
#              equal steps and paired data, evaluated on the same test sets with the same
#              decoders (its own LM weights and bonuses, from validation); tables side by side,
#              and teacher-forced scores of the text-only words' tokens (text_only_scores.py)
#
# --quick: a few sentences and steps per stage (CI; its run time: docs/training.md).
# --rescore: also the ctc_beam_rescore decoder (off by default for the main job's budget).
# Output: exp/tiny (or exp/tiny_quick); override with --work DIR or ASTRA_TINY_WORK. The fbank
# cache of the training runs, WORK/features (its size: docs/recipe_tiny.md), can be deleted.
# Extra `astra pretrain/finetune` settings: ASTRA_TINY_SET="optim.lr=1e-3 run.max_steps=100".
set -euo pipefail

usage() { sed -n '2,/^set /p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }  # the header above

quick=0
compare=0
rescore=0
stages=()
work="${ASTRA_TINY_WORK:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --compare) compare=1 ;;
        --rescore) rescore=1 ;;
        --stage) [ $# -ge 2 ] || { echo "run.sh: --stage needs a name" >&2; exit 2; }; stages+=("$2"); shift ;;
        --work) [ $# -ge 2 ] || { echo "run.sh: --work needs a folder" >&2; exit 2; }; work="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

recipe_name=tiny
# shellcheck source=recipes/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"  # repo root, PY, say, need, timed, validation_choice
recipe=recipes/tiny
ASTRA="${ASTRA:-$repo/.venv/bin/astra}"
[ -x "$ASTRA" ] || { echo "run.sh: $ASTRA not found: run 'make env' (tools/setup_env.sh) first" >&2; exit 2; }

all_stages=(corpus tokenizer lm pretrain finetune evaluate plot)
[ "$compare" = 1 ] && all_stages+=(compare)
if [ ${#stages[@]} -eq 0 ]; then
    stages=("${all_stages[@]}")
else
    for s in "${stages[@]}"; do
        case " corpus tokenizer lm pretrain finetune evaluate plot compare " in
            *" $s "*) ;;
            *) echo "run.sh: unknown stage '$s' (corpus tokenizer lm pretrain finetune evaluate plot compare)" >&2; exit 2 ;;
        esac
    done
fi

# ---- sizes: full run vs --quick ----------------------------------------------------------
languages=(en_us de_de es_419 it_it ru_ru)
if [ "$quick" = 1 ]; then
    work="${work:-exp/tiny_quick}"
    corpus_cfg=$recipe/corpus_quick.yaml
    vocab_size=128
    lm_order=3
    pre_set=(run.max_steps=20 run.save_every=20 run.validate_every=20 run.valid_max_batches=1
             run.log_every=5 optim.warmup_steps=5 losses.ramps.consistency.start=5 losses.ramps.consistency.steps=5
             data.max_batch_seconds=20 data.max_text_tokens_per_batch=500 run.feature_stats_utterances=100
             data.max_skip_fraction=0.5)
    ft_set=(run.max_steps=10 run.save_every=10 run.validate_every=10 run.valid_max_batches=1
            run.log_every=5 optim.warmup_steps=2 data.max_batch_seconds=20 data.max_text_tokens_per_batch=500
            run.feature_stats_utterances=100 data.max_skip_fraction=0.5)
else
    work="${work:-exp/tiny}"
    corpus_cfg=$recipe/corpus.yaml
    vocab_size=256
    lm_order=6
    pre_set=()
    ft_set=()
fi
extra_set=()
for kv in ${ASTRA_TINY_SET:-}; do extra_set+=("$kv"); done
corpus="$work/corpus"
tokenizer="$work/tokenizer.model"
lm_dir="$work/lm"
mkdir -p "$work"
timings="$work/timings.tsv"

sets() { local kv; for kv in "$@"; do printf -- '--set\n%s\n' "$kv"; done; }
unpaired_list() {
    local items=() lang
    for lang in "${languages[@]}"; do items+=("$lang=$corpus/$lang/unpaired.txt"); done
    local IFS=,; echo "[${items[*]}]"
}

# ---- stages -------------------------------------------------------------------------------
stage_corpus() {
    say "corpus -> $corpus ($corpus_cfg)"
    "$PY" tools/build_tiny_corpus.py --out "$corpus" --config "$corpus_cfg" --workers "$(nproc)" || {
        echo "run.sh: corpus stage failed; if its settings changed, delete $work (or use --work DIR):" \
             "the tokenizer and models trained on the old corpus would be stale too" >&2
        exit 2
    }
}

stage_tokenizer() {
    need "$corpus/corpus.json" corpus
    if [ -f "$tokenizer" ]; then say "tokenizer: $tokenizer exists (skipped)"; return; fi
    say "tokenizer -> $tokenizer"
    # on the paired transcripts only: every piece is then heard in training speech, and a word
    # that occurs only in the unpaired text is spelled with pieces the acoustic model knows
    "$ASTRA" tokenizer train --corpus "$corpus" --splits pretrain,train \
        --vocab-size "$vocab_size" --model-type unigram --character-coverage 1.0 --out "$tokenizer"
}

stage_lm() {
    need "$tokenizer" tokenizer
    if [ -f "$lm_dir/manifest.json" ]; then say "lm: $lm_dir exists (skipped)"; return; fi
    say "lm -> $lm_dir (the unpaired text of every language)"
    local texts=() lang
    for lang in "${languages[@]}"; do texts+=(--text "$lang=$corpus/$lang/unpaired.txt"); done
    "$ASTRA" lm train --tokenizer "$tokenizer" "${texts[@]}" --order "$lm_order" --out "$lm_dir"
}

train_run() {  # train_run KIND(pretrain|finetune) OUT CONFIG [INIT] -- extra --set values
    local kind="$1" out="$2" config="$3" init="${4:-}"
    shift 4
    if [ -f "$out/DONE" ]; then say "$kind: $out is finished (skipped)"; return; fi
    say "$kind -> $out"
    local args=(--config "$config" --out-dir "$out" --resume)
    [ -n "$init" ] && args+=(--init "$init")
    # fbank features are cached on disk after their first epoch (~17 % cheaper steps after it;
    # tools/bench_train_step.py); every run of this work folder shares them
    local base=(data.corpora="[$corpus]" data.tokenizer="$tokenizer" data.unpaired_text="$(unpaired_list)"
                data.feature_cache="$work/features")
    mapfile -t set_args < <(sets "${base[@]}" "$@" "${extra_set[@]}")
    "$ASTRA" "$kind" "${args[@]}" "${set_args[@]}"
    touch "$out/DONE"
}

stage_pretrain() {
    need "$tokenizer" tokenizer
    train_run pretrain "$work/pretrain" $recipe/pretrain.yaml "" "${pre_set[@]}"
}

stage_finetune() {
    need "$work/pretrain/DONE" pretrain
    train_run finetune "$work/finetune" $recipe/finetune.yaml "$work/pretrain" "${ft_set[@]}"
}

# the decoders: eval folder suffix, label and `astra evaluate` options. The Aligner + CTC
# joint search's CTC weight (0.7) and CTC beam + LM's beam (16: 38.0 -> 36.0 % WER against 8)
# were chosen on the validation split (docs/recipe_tiny.md); the *_lm decoders add LM shallow fusion with the LM weight and length bonus that `lm_choice`
# picks on validation for the checkpoint being evaluated.
decoder_names=("" _ctc_beam _ctc_beam_lm _ctc _ctc_lm)
[ "$rescore" = 1 ] && decoder_names+=(_rescore)
decoder_label() {  # decoder_label SUFFIX
    case "$1" in
        "") echo "Aligner greedy" ;;
        _ctc_beam) echo "Aligner + CTC beam" ;;
        _ctc_beam_lm) echo "Aligner + CTC beam + LM" ;;
        _ctc) echo "CTC greedy" ;;
        _ctc_lm) echo "CTC beam + LM" ;;
        _rescore) echo "CTC beam + LM, Aligner rescoring" ;;
    esac
}
decoder_options() {  # decoder_options SUFFIX [LM_WEIGHT(S) [LENGTH_BONUS(ES) [CTC_WEIGHT(S)]]]
    local lm="--lm $lm_dir --lm-weight ${2:-0.3} --length-bonus ${3:-0}"
    case "$1" in
        "") echo "--method aligner_greedy" ;;
        _ctc_beam) echo "--method aligner_ctc_beam --beam 8 --ctc-weight 0.7" ;;
        _ctc_beam_lm) echo "--method aligner_ctc_beam --beam 8 --ctc-weight 0.7 $lm" ;;
        _ctc) echo "--method ctc_greedy" ;;
        _ctc_lm) echo "--method ctc_beam --beam 16 $lm" ;;
        _rescore) echo "--method ctc_beam_rescore --beam 16 $lm --ctc-weight ${4:-0.9}" ;;
    esac
}
# the validation grid of the *_lm decoders: every LM weight with every length bonus (without a
# bonus a strong LM makes the search leave words out: docs/recipe_tiny.md, "LM fusion settings");
# the joint search's best weights are lower than CTC beam's (the Aligner's own score is an LM),
# and CTC beam's best bonus was 2 or 3 in every sweep so far (0 and 1 never: 6 of 6 models
# chose 2 or 3). The rescoring decoder keeps CTC beam + LM's LM weight and bonus and sweeps
# its CTC weight (1: CTC beam + LM's own choice; one decoding pass serves every weight).
lm_weights_joint=0.1,0.2,0.3,0.5
lm_bonuses_joint=0,1,2
lm_weights_ctc=0.5,0.7,1.0
lm_bonuses_ctc=2,3
rescore_ctc_weights=0.5,0.6,0.7,0.8,0.9,1
if [ "$quick" = 1 ]; then  # a 2 x 2 grid
    lm_weights_joint=0.3,1.0; lm_weights_ctc=0.3,1.0; lm_bonuses_joint=0,1; lm_bonuses_ctc=0,1
    rescore_ctc_weights=0.5,1
fi
lm_grid() {  # lm_grid SUFFIX: "WEIGHTS BONUSES" its sweep tries
    case "$1" in
        _ctc_beam_lm) echo "$lm_weights_joint $lm_bonuses_joint" ;;
        *) echo "$lm_weights_ctc $lm_bonuses_ctc" ;;
    esac
}

lm_choice() {  # lm_choice SUFFIX CHECKPOINT_RUN OUT_DIR: "WEIGHT BONUS [CTC_WEIGHT]" with the lowest validation WER
    local sweep="$3$1_sweep_validation" weights bonuses ctc_weights=""
    if [ "$1" = _rescore ]; then  # CTC beam + LM's LM weight and bonus; the CTC weights swept
        read -r weights bonuses <<< "$(lm_choice _ctc_lm "$2" "$3")"
        ctc_weights=$rescore_ctc_weights
    else
        read -r weights bonuses <<< "$(lm_grid "$1")"
    fi
    # shellcheck disable=SC2046  # the options are words
    validation_choice "$sweep" "LM sweep on validation (weights $weights, length bonuses $bonuses${ctc_weights:+, CTC weights $ctc_weights}) for $2 ($(decoder_label "$1"))" \
        "$ASTRA" evaluate --checkpoint "$2" --data "$corpus" --split validation \
        $(decoder_options "$1" "$weights" "$bonuses" $ctc_weights)
}

evaluate_run() {  # evaluate_run CHECKPOINT_RUN OUT_DIR: every decoder, into OUT_DIR{suffix}
    local ckpt="$1" out suffix choice options
    for suffix in "${decoder_names[@]}"; do
        out="$2$suffix"
        if [ -f "$out/results.json" ]; then say "evaluate: $out/results.json exists (skipped)"; continue; fi
        choice=""
        case "$suffix" in
            *_lm | _rescore) need "$lm_dir/manifest.json" lm; choice="$(lm_choice "$suffix" "$ckpt" "$2")" ;;
        esac
        # shellcheck disable=SC2086  # the choice is "WEIGHT BONUS [CTC_WEIGHT]"
        options="$(decoder_options "$suffix" $choice)"
        say "evaluate $ckpt ($options) -> $out"
        # shellcheck disable=SC2086  # the options are words
        "$ASTRA" evaluate --checkpoint "$ckpt" --data "$corpus" --split test $options --output-dir "$out"
    done
}

stage_evaluate() {
    need "$work/finetune/DONE" finetune
    evaluate_run "$work/finetune" "$work/eval/main"
    say "text-only words (occur in the unpaired text, never in paired training speech)"
    local evals=() suffix
    for suffix in "${decoder_names[@]}"; do evals+=(--eval "$(decoder_label "$suffix")=$work/eval/main$suffix"); done
    "$PY" $recipe/report.py --corpus "$corpus" "${evals[@]}" --out "$work/results_main"
}

stage_plot() {
    need "$work/finetune/DONE" finetune
    local out="$work/plots"
    if [ -f "$out/attention.png" ]; then say "plot: $out/attention.png exists (skipped)"; return; fi
    # the first test utterance of the first language: path and reference
    local row audio text
    row="$(sed -n 2p "$corpus/${languages[0]}/test.tsv")"
    audio="$corpus/${languages[0]}/$(cut -f1 <<< "$row")"
    text="$(cut -f2 <<< "$row")"
    say "plot-attention ($audio: \"$text\") -> $out"
    "$ASTRA" plot-attention --checkpoint "$work/finetune" --text "$text" --language "${languages[0]}" \
        --output-dir "$out" "$audio"
}

stage_compare() {
    need "$tokenizer" tokenizer
    # (a) paired only: same model, steps and paired data; no unpaired text, no ASTRA
    local off=(data.text_ratio=0.0 data.unpaired_text=[] losses.consistency=0.0 losses.text_aligner=0.0 losses.text_rnnt=0.0
         losses.text_ctc=0.0 losses.aligned_consistency=0.0)
    train_run pretrain "$work/paired_only/pretrain" $recipe/pretrain.yaml "" \
        "${pre_set[@]}" "${off[@]}" model.consistency=false
    train_run finetune "$work/paired_only/finetune" $recipe/finetune.yaml "$work/paired_only/pretrain" \
        "${ft_set[@]}" "${off[@]}" finetune.text_injection=false
    evaluate_run "$work/paired_only/finetune" "$work/eval/paired_only"
    local suffix
    for suffix in "${decoder_names[@]}"; do
        need "$work/eval/main$suffix/results.json" evaluate
        say "paired-only vs unpaired text + ASTRA ($(decoder_label "$suffix"); same test sets; text-only words never in paired speech)"
        "$PY" $recipe/report.py --corpus "$corpus" --eval "paired-only=$work/eval/paired_only$suffix" \
            --eval "text+ASTRA=$work/eval/main$suffix" --out "$work/results_compare$suffix"
    done
    if [ -f "$work/text_only_scores.json" ]; then
        say "text-only scores: $work/text_only_scores.json exists (skipped)"
    else
        say "teacher-forced Aligner scores of the text-only words' tokens (how far from winning they are)"
        "$PY" $recipe/text_only_scores.py --corpus "$corpus" --model "paired-only=$work/paired_only/finetune" \
            --model "text+ASTRA=$work/finetune" --out "$work/text_only_scores" > /dev/null
    fi
}

# ---- run ----------------------------------------------------------------------------------
t0=$(date +%s)
for s in "${stages[@]}"; do
    timed "$s" "stage_$s"
done
total=$(( $(date +%s) - t0 ))
say "done in ${total}s: stages ${stages[*]} (per-stage seconds appended to $timings)"
ran() { case " ${stages[*]} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if ran evaluate && [ -f "$work/results_main.md" ]; then
    echo; echo "Test set (unseen voices), the text-injected model:"; cat "$work/results_main.md"
fi
if ran compare && [ -f "$work/results_compare.md" ]; then
    for suffix in "${decoder_names[@]}"; do
        echo; echo "Paired-only vs text-injected, $(decoder_label "$suffix"):"; cat "$work/results_compare$suffix.md"
    done
    echo; echo "Teacher-forced Aligner scores (test set):"; cat "$work/text_only_scores.md"
fi
exit 0
