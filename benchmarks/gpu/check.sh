#!/usr/bin/env bash
# The GPU check (issue 24): vocseg's CUDA defaults (bf16 autocast, channels_last, cuDNN autotuning,
# pinned memory, torchrun) run for real on one GPU, in one command, on a bare machine without
# network. See benchmarks/gpu/README.md for the exact device-tool call and how to read the results.
#
#   OUT=/some/folder bash benchmarks/gpu/check.sh             # on the GPU machine (about 8 min, estimated)
#   OUT=/some/folder bash benchmarks/gpu/check.sh --dry-run   # on a CPU: every step at toy size (2-3 min on 2 cores)
#
# Writes $OUT/gpu.json (one entry per step, rewritten after each, so a run cut short still
# leaves valid JSON), $OUT/check.log (every command and its output) and two pictures
# (train_curves.png, predict_overlay.png). Run folders stay in a temporary folder, removed at the end.
#
# Environment: PYTHON (default python3), VOCSEG_GPU_DRY=1 (= --dry-run), VOCSEG_GPU_BUDGET_S
# (default 540: steps that no longer fit are skipped and say so; the device tool kills at 600;
# a dry run: 3600, and 4 times each step's limit, for a busy CPU),
# VOCSEG_GPU_ITERS (default 400: the tiny model's training iterations), VOCSEG_GPU_KEEP=1 (keep the
# temporary folder), VOCSEG_WHEEL_DIR (default REPO/.whl: the wheels to install when vocseg's
# dependencies do not import). Exit status: 0 when every step is ok or skipped with a reason, 1 otherwise.
set -u
set -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
dry=${VOCSEG_GPU_DRY:-0}
for arg in "$@"; do
  case $arg in
    --dry-run) dry=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "check.sh: unknown argument '$arg'. Run: bash benchmarks/gpu/check.sh --help" >&2; exit 2 ;;
  esac
done
if [ -z "${OUT:-}" ]; then
  echo "check.sh: OUT is not set: it names the folder for gpu.json and check.log. Run: OUT=/tmp/gpu-check bash benchmarks/gpu/check.sh$([ "$dry" = 1 ] && echo " --dry-run")" >&2
  exit 2
fi
mkdir -p "$OUT" || exit 2
PY=${PYTHON:-python3}
# The budget guards the device command's 600 s; a dry run on a busy CPU may take longer, unguarded.
if [ "$dry" = 1 ]; then budget=${VOCSEG_GPU_BUDGET_S:-3600}; slow=4; else budget=${VOCSEG_GPU_BUDGET_S:-540}; slow=1; fi
iters=${VOCSEG_GPU_ITERS:-400}
json=$OUT/gpu.json
log=$OUT/check.log
work=$(mktemp -d "${TMPDIR:-/tmp}/vocseg-gpu-check.XXXXXX") || exit 2
[ "${VOCSEG_GPU_KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
: >"$log"

# vocseg from this tree, never an installed copy; progress as plain lines at full width.
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 COLUMNS=200
if [ "$dry" = 1 ]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # a shared 2-core CI machine: no OpenMP spinning
fi
record() { "$PY" "$here/record.py" "$@"; }
say() { echo "$*" | tee -a "$log"; }

mode=gpu; [ "$dry" = 1 ] && mode=dry-run
record init "$json" $([ "$dry" = 1 ] && echo --dry-run) --set "mode=$mode" --set "budget_s=$budget" --set "iters=$iters" \
  --set "commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" || { echo "check.sh: cannot write $json" >&2; exit 2; }
say "GPU check ($mode) started $(date -u +%FT%TZ); results: $json; log: $log; work folder: $work"

declare -A status=()
failures=0
t_start=$(date +%s)

elapsed() { echo $(( $(date +%s) - t_start )); }

# skip NAME REASON: record a step that did not run, and why.
skip() {
  status[$1]=skipped
  record step "$json" "$1" --status skipped --reason "$2"
  say "--- $1: skipped ($2)"
}

# needs NAME STEP...: true when every STEP ended ok; else records NAME as skipped and is false.
needs() {
  local name=$1; shift
  local s
  for s in "$@"; do
    if [ "${status[$s]:-none}" != ok ]; then
      skip "$name" "needs step '$s', which is ${status[$s]:-not run}"
      return 1
    fi
  done
}

# step NAME CAP_S MIN_S INFO -- CMD...: run CMD under `timeout` (CAP_S, cut to what is left of the
# budget; skipped when less than MIN_S is left), output to the log. INFO is a command line (or '')
# that writes the step's result object to $work/NAME.json; it runs after CMD, also when CMD failed.
step() {
  local name=$1 cap=$(( $2 * slow )) min=$3 info=$4; shift 5
  local left=$(( budget - $(elapsed) ))
  if (( left < min )); then
    skip "$name" "out of time: ${left} s of the ${budget} s budget left, the step needs at least ${min} s"
    return
  fi
  local limit=$(( cap < left ? cap : left ))
  {
    echo
    echo "=== $name (limit ${limit} s, at $(elapsed) s): $*"
  } >>"$log"
  local t0 rc st reason=""
  rm -f "$work/$name.json"
  t0=$(date +%s.%N)
  timeout -k 20 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  local secs
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  if (( rc == 0 )); then st=ok
  elif (( rc == 124 || rc == 137 )); then st=timeout; reason="stopped by its ${limit} s limit"
  else st=failed; reason="exit status $rc (see check.log)"
  fi
  if [ -n "$info" ]; then
    echo "--- $name: collecting results: $info" >>"$log"
    if ! timeout -k 10 180 bash -c "$info" >>"$log" 2>&1 && [ "$st" = ok ]; then
      st=failed; reason="the command succeeded but its check failed (see check.log)"
    fi
  fi
  local data=()
  [ -f "$work/$name.json" ] && data=(--data "$work/$name.json")
  record step "$json" "$name" --status "$st" --seconds "$secs" --exit-code "$rc" ${reason:+--reason "$reason"} "${data[@]}"
  # record.py may turn an "ok" without a readable result into "failed": read the status back
  st=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["steps"][sys.argv[2]]["status"])' "$json" "$name" 2>/dev/null || echo failed)
  status[$name]=$st
  [ "$st" = ok ] || failures=$((failures + 1))
  say "--- $name: $st in ${secs} s${reason:+ ($reason)}"
}

# 1. Install the carried wheels (.whl/, from benchmarks/gpu/wheels.sh) into a private folder: the
#    machine's own packages (torch above all) stay as they are. Nothing to do where the stack imports.
site=$work/site
probe='import mmengine, mmseg, mmcv, ftfy, platformdirs, typer, rich, jinja2, vocseg.cli'
wheel_dir=${VOCSEG_WHEEL_DIR:-$root/.whl}
wheels=( "$wheel_dir"/*.whl )
if "$PY" -c "$probe" >/dev/null 2>&1; then
  step install 60 5 "echo '{\"wheels_installed\": 0, \"note\": \"the stack already imports here: nothing installed\"}' >\"$work/install.json\"" -- \
    "$PY" -c "$probe"
elif [ -f "${wheels[0]}" ]; then
  export PYTHONPATH="$root/src:$site${PYTHONPATH#"$root/src"}"
  step install 180 30 "\"$PY\" -c '$probe' && echo '{\"wheels_installed\": ${#wheels[@]}, \"target\": \"$site\"}' >\"$work/install.json\"" -- \
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${wheels[@]}"
else
  record step "$json" install --status failed --reason "vocseg's dependencies do not import and $wheel_dir holds no wheels: run bash benchmarks/gpu/wheels.sh where pip reaches PyPI, and carry .whl"
  status[install]=failed; failures=$((failures + 1))
  say "--- install: failed (no wheels in .whl/)"
fi

# 2. The machine: Python, torch, CUDA, GPU, package versions.
step environment 120 10 '' -- "$PY" "$here/steps.py" env --result "$work/environment.json"
cuda=$("$PY" -c 'import json,sys; print(int(bool(json.load(open(sys.argv[1]))["steps"]["environment"]["result"].get("cuda_available"))))' "$json" 2>/dev/null || echo 0)

# What the CUDA steps run with. The dry run (and a machine without a GPU) runs the same commands
# on the CPU at toy size: it checks the script, not the figures.
data=$work/data
runs=$work/runs
if [ "$dry" = 1 ]; then
  dev=(--device cpu); train=(--model tiny --batch 2 --iters 6 --ckpt-interval 2 --val-interval 6 --num-workers 0 --seed 0)
  stop_at=3; restart=(--model tiny --batch 2 --iters 8 --ckpt-interval 2 --val-interval 8 --num-workers 0); kill_after=iter_2.pth
  bench=(--smoke); predict_device=cpu
elif [ "$cuda" = 1 ]; then
  dev=(--gpus 0); half=$(( iters / 2 ))
  train=(--model tiny --batch 8 --iters "$iters" --ckpt-interval $(( iters / 4 )) --val-interval "$half" --seed 0)
  stop_at=$(( iters * 2 / 5 )); restart=(--model tiny --batch 8 --iters "$half" --ckpt-interval $(( iters / 8 )) --val-interval "$half")
  kill_after=iter_$(( iters / 4 )).pth
  bench=(); predict_device=cuda
fi
if [ "$dry" != 1 ] && [ "$cuda" != 1 ]; then
  for s in prepare train interrupt resume eval predict gpu_train restart; do
    skip "$s" "no CUDA GPU visible here (torch.cuda.is_available() is False); bash benchmarks/gpu/check.sh --dry-run runs these steps on the CPU"
  done
else
  # 3. The demo data, as a user makes it.
  needs prepare install environment && \
    step prepare 120 20 '' -- "$PY" -m vocseg prepare --demo --data-root "$data"

  # 4. Training with the CUDA defaults, straight through; its settings, speed, memory and val mIoU.
  needs train prepare && \
    step train 240 40 "\"$PY\" \"$here/steps.py\" run-info \"$runs/straight\" --result \"$work/train.json\"" -- \
      "$PY" -m vocseg train --data-root "$data" "${dev[@]}" "${train[@]}" --work-dir "$runs/straight"

  # 5. The same run stopped by SIGTERM part-way (checkpoint saved, exit 143), then `vocseg resume`;
  #    its final weights against the straight run's (bitwise on the CPU; bf16 and cuDNN's autotuning
  #    on a GPU may differ slightly: the step states by how much).
  needs interrupt prepare && \
    step interrupt 240 40 "\"$PY\" \"$here/steps.py\" run-info \"$runs/resumed\" --result \"$work/interrupt.json\" --stop-info \"$work/interrupt-signal.json\"" -- \
      "$PY" "$here/steps.py" interrupt --stop-at "$stop_at" --result "$work/interrupt-signal.json" -- \
      "$PY" -m vocseg train --data-root "$data" "${dev[@]}" "${train[@]}" --work-dir "$runs/resumed"
  needs resume interrupt && \
    step resume 240 40 "\"$PY\" \"$here/steps.py\" run-info \"$runs/resumed\" --against \"$runs/straight\" --result \"$work/resume.json\"" -- \
      "$PY" -m vocseg resume "$runs/resumed"

  # 6. Evaluation and inference of the straight run's final checkpoint.
  needs eval train && \
    step eval 180 30 "\"$PY\" \"$here/steps.py\" eval-info \"$work/eval-out.json\" --result \"$work/eval.json\"" -- \
      "$PY" -m vocseg eval "$runs/straight" --json "$work/eval-out.json"
  needs predict train && \
    step predict 180 30 "\"$PY\" \"$here/steps.py\" predict-info \"$work/predictions\" --result \"$work/predict.json\"" -- \
      "$PY" -m vocseg predict "$data"/VOCdevkit/VOC2012/JPEGImages/2026_00008[1-6].jpg --checkpoint "$runs/straight" \
      --device "$predict_device" --out "$work/predictions"

  # 7. UPerNet-R50 at 512x512, batch 4: plain MMSeg (fp32, NCHW) against vocseg's defaults
  #    (benchmarks/gpu_train.py writes its JSON after each phase, so a cut run still reports).
  needs gpu_train install environment && \
    step gpu_train 330 90 "cp \"$work/gpu_train-out.json\" \"$work/gpu_train.json\"" -- \
      "$PY" "$root/benchmarks/gpu_train.py" "${bench[@]}" --json "$work/gpu_train-out.json"

  # 8. torchrun's restart: one process under torchrun (--max-restarts 1) is SIGKILLed after a
  #    checkpoint; the agent restarts it, it resumes and finishes. (Two processes on one GPU would
  #    measure nothing: NCCL refuses two ranks on the same device.)
  needs restart prepare && \
    step restart 240 50 "\"$PY\" \"$here/steps.py\" run-info \"$runs/restarted\" --result \"$work/restart.json\" --stop-info \"$work/restart-kill.json\"" -- \
      "$PY" "$here/steps.py" kill-worker --after "$runs/restarted/$kill_after" --timeout $(( 230 * slow )) --result "$work/restart-kill.json" -- \
      "$PY" -m vocseg train --data-root "$data" "${dev[@]}" "${restart[@]}" --max-restarts 1 --work-dir "$runs/restarted"
fi

# Pictures worth a look (the device tool brings back at most 8 files from $OUT).
[ -f "$runs/straight/curves.png" ] && cp "$runs/straight/curves.png" "$OUT/train_curves.png"
first_overlay=$(compgen -G "$work/predictions/*_overlay.png" | head -n 1)
[ -n "$first_overlay" ] && cp "$first_overlay" "$OUT/predict_overlay.png"

record finish "$json" --seconds "$(elapsed)" --failed "$failures"
say ""
say "GPU check ($mode) finished in $(elapsed) s with $failures failed step(s):"
record summary "$json" | tee -a "$log"
[ "$failures" = 0 ]
